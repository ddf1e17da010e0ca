"""The anjana / pycanon side of the `anonymize` benchmark, run in its own venv
(`benchmarks/.venvs/anjana`: anjana and the pycanon it pins).

Reads one JSON object on stdin:

* `{"mode": "anjana", "csv", "qis", "k", "supp_level", "hierarchies": {qi: path}}`:
  reads the CSV and the ARX hierarchy files with pandas (`sep=";"`, as anjana's own
  examples do: `{level: column values}` per QI), then times
  `anjana.anonymity.k_anonymity(data, [], qis, k, supp_level, hierarchies)`.
* `{"mode": "check", "csv", "qis", "rows_in"}`: an anonymised CSV written by tidegate.

In both modes the released table is measured here, the same way for both tools:
pycanon's `k_anonymity` (the k the output really has), suppressed rows (`rows_in` minus
rows out), classes and discernibility (`Σ|E|² + suppressed x rows_in`), with a pandas
group-by. Prints one JSON line.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from typing import Any


def measure(data: Any, qis: list[str], rows_in: int) -> dict[str, Any]:
    import pycanon.anonymity

    rows_out = len(data)
    if rows_out:
        sizes = data.astype(dict.fromkeys(qis, str)).groupby(qis, dropna=False).size()
        k = int(pycanon.anonymity.k_anonymity(data, qis))
    else:
        sizes, k = [], 0
    suppressed = rows_in - rows_out
    return {
        "k_pycanon": k,
        "rows_out": rows_out,
        "suppressed": suppressed,
        "classes": len(sizes),
        "discernibility": int(sum(int(n) ** 2 for n in sizes)) + suppressed * rows_in,
    }


def main() -> None:
    spec = json.loads(sys.stdin.read())
    import pandas as pd

    qis: list[str] = spec["qis"]
    if spec["mode"] == "check":
        data = pd.read_csv(spec["csv"], keep_default_na=False)
        print(json.dumps(measure(data, qis, int(spec["rows_in"]))))
        return
    import anjana
    from anjana.anonymity import k_anonymity

    data = pd.read_csv(spec["csv"], keep_default_na=False)
    hierarchies = {}
    for qi, path in spec["hierarchies"].items():
        levels = pd.read_csv(path, header=None, sep=";", keep_default_na=False)
        hierarchies[qi] = {i: levels[i].values for i in range(levels.shape[1])}
    rows_in = len(data)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # anjana prints progress
        released = k_anonymity(data, [], qis, int(spec["k"]), spec["supp_level"], hierarchies)
    seconds = time.perf_counter() - started
    if "index" in released.columns:  # anjana's reset_index() after suppression
        released = released.drop(columns=["index"])
    result = measure(released, qis, rows_in)
    result.update({"seconds": seconds, "anjana": anjana.__version__})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
