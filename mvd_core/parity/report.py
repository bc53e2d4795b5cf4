"""The result of `mvd parity`: :class:`ParityReport`, its console table and its JSON."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mvd_core.parity.compare import Row
from mvd_core.parity.tolerances import NOISE_FLOOR, NOISE_FLOOR_STEPS, TOLERANCES


@dataclass
class ParityReport:
    backends: tuple[str, str]
    settings: dict[str, Any]
    rows: list[Row] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r.passed for r in self.rows)

    def failures(self) -> list[Row]:
        return [r for r in self.rows if not r.passed]

    def summary_rows(self, per_section_limit: int = 1) -> list[Row]:
        """Rows for the console: every row of small sections; for the per-parameter sections
        (grad/, params/) one aggregate row (the worst) plus every failing parameter."""
        out: list[Row] = []
        groups: dict[str, list[Row]] = {}
        for r in self.rows:
            groups.setdefault(r.section, []).append(r)
        for rows in groups.values():
            if len(rows) <= 40:
                out.extend(rows)
                continue
            worst = max(rows, key=lambda r: (not r.passed, r.rel))
            n_fail = sum(not r.passed for r in rows)
            out.append(dataclasses.replace(
                worst, name=f"worst of {len(rows)}: {worst.name}" + (f" ({n_fail} failing)" if n_fail else "")))
            arb = [r for r in rows if r.via_arbiter and r.bound]
            if arb:  # the arbiter's narrowest margin
                tight = max(arb, key=lambda r: (r.exact_rel or 0.0) / (r.bound or 1.0))
                if tight is not worst:
                    out.append(dataclasses.replace(tight, name=f"tightest fp64: {tight.name}"))
            out.extend(r for r in rows if not r.passed and r is not worst)
        return out

    def to_table(self) -> str:
        head = f"{'section':<22} {'name':<44} {'max|Δ|':>10} {'rel err':>10} {'cosine':>10} {'tolerance':>18} pass"
        arbiter = self.settings.get("arbiter")
        lines = [
            f"parity: {self.backends[0]} (candidate) vs {self.backends[1]} (reference); fp64 arbiter: "
            + (f"{arbiter} (noise-floor sections: a row failing fp32 passes iff rel(candidate, fp64) "
               f"<= max(rtol, K x floor), K = {TOLERANCES[NOISE_FLOOR].rtol:g} for gradients, "
               f"{TOLERANCES[NOISE_FLOOR_STEPS].rtol:g} after the steps)" if arbiter else "off"),
            head, "-" * len(head)]
        for r in self.summary_rows():
            t = TOLERANCES[r.tolerance]
            tol = f"{r.tolerance} " + (f"{t.atol:g}" if t.kind == "abs" else f"{t.rtol:g}/{t.atol:g}")
            lines.append(
                f"{r.section:<22} {r.name[:44]:<44} {r.max_abs:>10.3g} {r.rel:>10.3g} {r.cosine:>10.6f} "
                f"{tol:>18} {'ok' if r.passed else 'FAIL'}" + (f"  {r.note()}" if r.note() else "")
            )
        n_fail = len(self.failures())
        lines.append("-" * len(head))
        groups = self.settings.get("noise_floor_groups", {})
        for sec, (floor, where) in self.settings.get("noise_floor", {}).items():
            n_arb = sum(r.via_arbiter for r in self.rows if r.section == sec)
            if sec in groups:
                where = ", ".join(f"{g} {f:.3g} ({w})" for g, (f, w) in groups[sec].items())
            lines.append(f"fp32 noise floor, {sec}: {floor:.3g} ({where}); {n_arb} rows passed by the fp64 arbiter")
        n_arb = sum(r.via_arbiter for r in self.rows)
        lines.append(
            f"{len(self.rows)} comparisons, {n_fail} failed"
            + (f", {n_arb} passed by the fp64 arbiter" if n_arb else "") + ": "
            + ("PASS" if self.passed else "FAIL")
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backends": list(self.backends),
            "settings": self.settings,
            "passed": self.passed,
            "tolerances": {k: dataclasses.asdict(v) for k, v in TOLERANCES.items()},
            "rows": [r.to_dict() for r in self.rows],
        }

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        from mvd_core.config import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, default=float))
        return Path(path)
