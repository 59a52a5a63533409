"""The staff directory (人员名录) locate answers with: who is responsible for a grid, micro-grid or building on a day.

Held in memory by `geo.locate.holder.IndexHolder` next to the index (read once, reloaded when staff change), so an
answer costs dictionary lookups, not a query. Phones are shown only where they are on the public notice board (公示)
unless the caller may see them all.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Sequence

import pandas as pd
from sqlalchemy import Connection, text

#: Order of roles in answers: the chain of responsibility first.
ROLE_ORDER = ("grid_chief", "grid_worker_fulltime", "grid_worker_parttime", "seconded_cadre", "building_head",
              "unit_head", "steward", "volunteer")


class StaffDirectory:
    """The staff assignments on grids, micro-grids and buildings with their people, held in memory."""

    def __init__(self, frame: pd.DataFrame):
        from geo.staff.register import ROLE_LABELS

        self.loaded_at = time.monotonic()
        frame = frame.copy()
        frame["role_rank"] = frame["role"].map({r: i for i, r in enumerate(ROLE_ORDER)}).fillna(len(ROLE_ORDER))
        frame = frame.sort_values(["role_rank", "person_id", "id"], kind="stable")
        # Plain tuples: (valid_from, valid_to, name, role, role label, phone, phone_public).
        self.by_target: dict[tuple[str, int], list[tuple]] = {}
        for rec in frame.to_dict("records"):
            vf, vt = _as_date(rec["valid_from"]), _as_date(rec["valid_to"])
            phone = rec["phone"] if isinstance(rec["phone"], str) and rec["phone"] else None
            item = (vf, vt, rec["name"], rec["role"], ROLE_LABELS.get(rec["role"]), phone, bool(rec["phone_public"]))
            self.by_target.setdefault((rec["target_type"], int(rec["target_id"])), []).append(item)

    @classmethod
    def load(cls, conn: Connection) -> StaffDirectory:
        """Read the assignments on grids, micro-grids and buildings (all periods)."""
        frame = pd.read_sql(text(
            """
            SELECT a.id, a.role, a.target_type, coalesce(a.grid_id, a.micro_grid_id, a.building_id) AS target_id,
                   a.valid_from, a.valid_to, p.id AS person_id, p.name, p.phone, p.phone_public
            FROM staff_assignments a JOIN people p ON p.id = a.person_id
            WHERE a.target_type IN ('grid', 'micro_grid', 'building')
            """), conn)
        return cls(frame)

    def staff(self, targets: Sequence[tuple[str, int | None]], day: dt.date, show_all_phones: bool) -> list[dict]:
        """People responsible for the targets on `day` (targets in the given order, then by role); the phone only
        when it is on the public notice board (公示) or `show_all_phones`."""
        out = []
        for target_type, target_id in targets:
            if target_id is None:
                continue
            for vf, vt, name, role, label, phone, public in self.by_target.get((target_type, int(target_id)), ()):
                if (vf is not None and vf > day) or (vt is not None and vt <= day):
                    continue
                out.append({"name": name, "role": role, "role_name": label, "target_type": target_type,
                            "target_id": int(target_id), "phone": phone if (public or show_all_phones) else None,
                            "phone_public": public})
        return out


def _as_date(value) -> dt.date | None:
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.date()
    if isinstance(value, dt.datetime):
        return value.date()
    return value

