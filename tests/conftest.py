"""Shared test set-up: quiet frameworks, few threads (CI has 2 cores)."""

import os

os.environ.setdefault("GLOG_v", "3")  # MindSpore: errors only
os.environ.setdefault("OMP_NUM_THREADS", "2")
