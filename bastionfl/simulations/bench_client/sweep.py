"""``bastionfl bench client-sweep``: the client benchmark over model size x HE profile x federation size, with
PNG plots (time, bytes, peak memory against size; the 512 MiB and 1 GiB lines drawn) and a markdown table.

Points whose client or server would need more memory than ``budget_mb`` (predicted from exact wire sizes of the
protocol's messages) are not run; they appear in the table and the plots as predicted.
The results file is written after every point, and ``resume`` reuses the points it already holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from .runner import BenchOptions, run_client_bench

__all__ = ["SweepSpec", "run_sweep", "render_sweep", "predicted_peak_mb"]

BASELINE_MB = 800.0  # client RSS with torch and one small model loaded, measured (rounded up) on this machine


class SweepSpec:
    """The grid and the fixed options of one sweep."""

    def __init__(self, sizes: list[int], he: list[str], clients: list[int], base: BenchOptions,
                 budget_mb: float = 4096.0) -> None:
        self.sizes, self.he, self.clients, self.base, self.budget_mb = sizes, he, clients, base, budget_mb

    def points(self) -> list[tuple[int, str, int]]:
        """(params, he, clients); plaintext runs once per size (federation size changes only its shard)."""
        out = []
        for size in self.sizes:
            for he in self.he:
                for n in (self.clients[:1] if he == "none" else self.clients):
                    out.append((size, he, n))
        return out


def predicted_peak_mb(params: int, he: str, clients: int) -> dict[str, float]:
    """Predicted peak RSS of client and server from exact wire sizes (malicious threat model: the client's decrypt
    stage downloads its own c1 and C1, about one upload whatever n; the server keeps every member's c1)."""
    if he == "none":
        return {"client": BASELINE_MB + 5 * 8 * params / 2**20, "server": 8 * params / 2**20}
    from .growth import predicted_server_mb
    from .he_adapter import wire_sizes

    s = wire_sizes(he, params, clients)
    down = s.decrypt_down_bytes / 2**20
    # client: its update as floats and encoded, the upload's array and its bytes; in the decrypt stage the
    # message bytes and the parsed arrays (about twice what it downloads)
    client = BASELINE_MB + max(3 * s.update_bytes / 2**20, 2 * down)
    return {"client": client, "server": predicted_server_mb(he, params, clients), "decrypt_down_mb": down}


def _key(p: tuple[int, str, int]) -> str:
    return f"{p[0]}/{p[1]}/{p[2]}"


def run_sweep(spec: SweepSpec, results_file: Path, resume: bool = False,
              progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or predict) every point; write ``results_file`` after each."""
    data: dict[str, Any] = {"points": {}}
    if resume and results_file.exists():
        data = json.loads(results_file.read_text())
        data["points"] = {k: v for k, v in data["points"].items() if "result" in v}  # skipped: predict again
    data["spec"] = {"sizes": spec.sizes, "he": spec.he, "clients": spec.clients, "budget_mb": spec.budget_mb,
                    "profile": spec.base.profile, "memory_mb": spec.base.memory_mb, "dataset": spec.base.dataset,
                    "steps": spec.base.steps}
    points = spec.points()
    for i, p in enumerate(points, 1):
        key = _key(p)
        if key in data["points"]:
            continue
        size, he, n = p
        pred = predicted_peak_mb(size, he, n)
        entry: dict[str, Any] = {"params": size, "he": he, "clients": n, "predicted": pred}
        if max(pred["client"], pred["server"]) > spec.budget_mb:
            entry["skipped"] = (f"predicted {pred['client']:,.0f} MB client / {pred['server']:,.0f} MB server, "
                                f"above this sweep's {spec.budget_mb:,.0f} MB budget")
            progress(f"[{i}/{len(points)}] {key}: skipped ({entry['skipped']})")
        else:
            progress(f"[{i}/{len(points)}] {key}: running")
            opts = BenchOptions(**{**spec.base.__dict__, "params": size, "he": he, "clients": n})
            entry["result"] = run_client_bench(opts, progress=lambda s: None)
            tot = entry["result"]["totals"]
            progress(f"    CPU {tot['cpu_s']:.2f} s, peak {tot['peak_rss_mb']:.0f} MB, ok {tot['ok']}")
        data["points"][key] = entry
        results_file.parent.mkdir(parents=True, exist_ok=True)
        results_file.write_text(json.dumps(data, indent=1) + "\n")
    from .scratch import remove_scratch, seal_scratch_dir

    remove_scratch(seal_scratch_dir())  # the size predictions ran small rounds in this process
    return data


def _mb(x: float) -> str:
    return f"{x:,.0f}"


def _size(x: float) -> str:
    for unit, s in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if x >= s:
            return f"{x / s:.1f} {unit}"
    return f"{x:.0f} B"


def _stage_cpu(res: dict[str, Any], name: str) -> str:
    st = res["stages"][name]
    if not st["ran"]:
        return "–"
    if not st["ok"]:
        return f"**{st.get('error', 'failed')}**"
    return f"{st['cpu_s']:.2f}"


def render_sweep(data: dict[str, Any], out_dir: Path, command: str) -> str:
    """Write the plots into ``out_dir``; return the markdown table (what docs/benchmarks.md shows)."""
    rows = ["| params | HE | n | train | key setup | encrypt | decrypt share | CPU total | up | down | peak RSS MB "
            "| device peak MB | device CPU s | J above idle |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {"none": 0, "lean": 1, "precise": 2}
    points = sorted(data["points"].values(), key=lambda e: (e["params"], order.get(e["he"], 9), e["clients"]))
    for e in points:
        head = f"| {e['params']:,} | {e['he']} | {e['clients']} |"
        if "skipped" in e:
            pred = e["predicted"]
            rows.append(head + " not run | | | | | | | " + f"≈{_mb(pred['client'])} predicted | | | |")
            continue
        r = e["result"]
        tot, dev = r["totals"], r["energy"]["projected_on_device"]
        rows.append(head + " ".join(f" {_stage_cpu(r, s)} |" for s in ("train", "key_setup", "encrypt",
                                                                         "decrypt_share"))
                    + f" {tot['cpu_s']:.2f} | {_size(tot['bytes_up'])} | {_size(tot['bytes_down'])} |"
                    f" {_mb(tot['peak_rss_mb'])} | {_mb(dev['peak_rss_mb'])} | {dev['cpu_s']:.1f} |"
                    f" {dev['energy_j_above_idle']:.1f} |")
    _plot(data, out_dir)
    return f"Command: `{command}`\n\n" + "\n".join(rows) + "\n"


def _plot(data: dict[str, Any], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    series: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for e in data["points"].values():
        series.setdefault((e["he"], e["clients"]), []).append(e)
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    colors = {"none": "black", "lean": "tab:blue", "precise": "tab:red"}
    styles = {3: "-", 30: "--", 100: ":"}
    for (he, n), pts in sorted(series.items()):
        pts.sort(key=lambda e: e["params"])
        label = f"{he}" if he == "none" else f"{he}, n={n}"
        kw = {"color": colors.get(he, "gray"), "linestyle": styles.get(n, "-.")}
        run = [e for e in pts if "result" in e]
        xs = [e["params"] for e in run]
        axes[0].plot(xs, [e["result"]["totals"]["cpu_s"] for e in run], marker="o", label=label, **kw)
        axes[1].plot(xs, [(e["result"]["totals"]["bytes_up"] + e["result"]["totals"]["bytes_down"]) / 2**20
                          for e in run], marker="o", label=label, **kw)
        axes[2].plot(xs, [e["result"]["totals"]["peak_rss_mb"] for e in run], marker="o", label=label, **kw)
        failed = [e for e in run if not e["result"]["totals"]["ok"]]
        axes[2].scatter([e["params"] for e in failed], [e["result"]["totals"]["peak_rss_mb"] for e in failed],
                        marker="x", s=90, color="red", zorder=5)
        skipped = [e for e in pts if "skipped" in e]
        if skipped:
            axes[2].scatter([e["params"] for e in skipped], [e["predicted"]["client"] for e in skipped],
                            facecolors="none", edgecolors=kw["color"], marker="s", s=60, zorder=4)
    left = min(e["params"] for e in data["points"].values())
    for mb, name in ((512, "512 MiB (rpi-zero2-class)"), (1024, "1 GiB (rpi4-class)")):
        axes[2].axhline(mb, color="gray", linewidth=1)
        axes[2].text(left, mb * 1.05, name, fontsize=8, color="gray")
    titles = ("client CPU seconds per round (1 core)", "bytes up + down per round (MiB)",
              "client peak RSS (MiB); x = stopped (OOM), □ = predicted, not run")
    for ax, title in zip(axes, titles):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("model parameters")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "bench-client-sweep.png", dpi=100)
    plt.close(fig)
