"""One picture of the Dask dashboard's Fine Performance Metrics page for a pipeline run.

Starts a LocalCluster with its dashboard, indexes a slice of rust-src in ``pipeline`` mode on
it with the real model, and when the run ends, while the cluster is still up,
shoots the page with headless Chromium. The run's tasks are grouped in Dask spans
(``rcm-dask`` / ``index`` / ``read-chunk``, ``embed``, ``write``: see ``rcm_dask.dataflow``), so
the page splits its time by stage (task prefix) and by activity.

Needs Chromium (``apt-get install -y chromium``). Usage:
  python benchmarks/modes/dashboard_shot.py          # library/alloc/src/collections, ~1 min
  python benchmarks/modes/dashboard_shot.py --root DIR --out shot.png
Writes benchmarks/modes/dashboard.png.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from modes.run import rust_src  # noqa: E402  (one place that finds the corpus)

PAGE = "/individual-fine-performance-metrics"


def shoot(url: str, out: Path, width: int = 1400, height: int = 900, wait: float = 8.0) -> None:
    """Render ``url`` in headless Chromium, wait for its plots, save a PNG at ``out``.

    Drives Chromium over its DevTools protocol (tornado's websocket client, a dependency of
    distributed): ``chromium --screenshot`` shoots at the load event, before bokeh has
    drawn anything from the server's websocket, and gives a blank page.
    """
    import asyncio
    import base64
    import json
    import socket
    import urllib.request

    from tornado.websocket import websocket_connect

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs Chromium: apt-get install -y chromium")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="rcm-chromium-") as profile:
        proc = subprocess.Popen(
            [
                chromium,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--window-size={width},{height}",
                f"--remote-debugging-port={port}",
                "--remote-allow-origins=*",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as r:
                        pages = [t for t in json.load(r) if t["type"] == "page"]
                    if pages:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("Chromium did not start")
                time.sleep(0.3)

            async def capture() -> bytes:
                ws = await websocket_connect(pages[0]["webSocketDebuggerUrl"])

                async def call(n: int, method: str, **params: object) -> dict[str, object]:
                    message = {"id": n, "method": method, "params": params}
                    await ws.write_message(json.dumps(message))
                    while True:
                        msg = await ws.read_message()
                        if msg is None:
                            raise SystemExit("Chromium closed the DevTools connection")
                        reply = json.loads(msg)
                        if reply.get("id") == n:
                            return reply.get("result", {})

                await call(1, "Page.navigate", url=url)
                await asyncio.sleep(wait)  # bokeh fetches the data and draws
                shot = await call(2, "Page.captureScreenshot", format="png")
                ws.close()
                return base64.b64decode(str(shot["data"]))

            out.write_bytes(asyncio.run(capture()))
            _crop(out)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _crop(png: Path, margin: int = 12) -> None:
    """Cut the page's empty white space below and right of the plots."""
    from PIL import Image, ImageChops

    with Image.open(png) as im:
        rgb = im.convert("RGB")
    box = ImageChops.difference(rgb, Image.new("RGB", rgb.size, "white")).getbbox()
    if box:
        right, bottom = min(rgb.width, box[2] + margin), min(rgb.height, box[3] + margin)
        rgb.crop((0, 0, right, bottom)).save(png, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", help="folder to index (default: rust-src's alloc collections)")
    parser.add_argument("--out", default=str(HERE / "dashboard.png"))
    args = parser.parse_args()
    root = Path(args.root) if args.root else rust_src() / "library/alloc/src/collections"

    from distributed import Client, LocalCluster

    import rcm_dask
    from rcm_dask import IndexConfig

    cluster = LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.ERROR,
    )
    client = Client(cluster)
    link = urlsplit(client.dashboard_link)
    url = urlunsplit((link.scheme, link.netloc, PAGE, "", ""))
    with tempfile.TemporaryDirectory(prefix="rcm-dashboard-") as tmp:
        config = IndexConfig.from_env(index_dir=tmp)
        start = time.perf_counter()
        stats = rcm_dask.index(str(root), config, mode="pipeline", client=client)
        wall = time.perf_counter() - start
        # the workers' next heartbeats carry the last metrics (the writer's time among them)
        time.sleep(3)
        shoot(url, Path(args.out))
        print(f"{root}: {stats.chunks} chunks in {wall:.1f} s; wrote {args.out} from {url}")
    client.close()
    cluster.close()


if __name__ == "__main__":
    main()
