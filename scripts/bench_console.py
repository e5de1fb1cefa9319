"""The console's first load in headless Chromium on loopback (scripts/bench-console.sh):
per round a fresh browser context (empty cache), bytes transferred (Chromium's
encodedDataLength of every response, headers included; the open /v1/events stream
counted up to the moment of measuring) and times from navigation start: DOM
interactive, and ready (window.__consoleReady: the live stream asked for and the first
page of documents drawn). Prints JSON with the median of each."""

import json
import statistics
import sys
import time

from playwright.sync_api import sync_playwright


def round_once(browser, url):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    sizes, urls = {}, {}
    cdp.on("Network.requestWillBeSent", lambda e: urls.__setitem__(e["requestId"], e["request"]["url"]))
    cdp.on("Network.dataReceived", lambda e: sizes.__setitem__(e["requestId"], sizes.get(e["requestId"], 0) + e["encodedDataLength"]))
    finished = {}
    cdp.on("Network.loadingFinished", lambda e: finished.__setitem__(e["requestId"], e["encodedDataLength"]))
    page.goto(url, wait_until="commit")
    # Polled from outside (wait_for_function would evaluate a string, which the
    # console's CSP forbids); the value is the page's own clock.
    ready = None
    for _ in range(1000):
        ready = page.evaluate("window.__consoleReady")
        if ready is not None:
            break
        time.sleep(0.01)
    assert ready is not None, "the console did not become ready within 10 s"
    nav = page.evaluate("JSON.parse(JSON.stringify(performance.getEntriesByType('navigation')[0]))")
    rows = page.locator("#docs li.doc").count()
    page.wait_for_timeout(300)
    total = 0
    for rid in urls:
        total += finished.get(rid, sizes.get(rid, 0))
    context.close()
    return {
        "bytes": total,
        "requests": len(urls),
        "dom_interactive_ms": round(nav["domInteractive"], 1),
        "ready_ms": round(ready, 1),
        "rows": rows,
    }


def main():
    url, rounds = sys.argv[1], int(sys.argv[2])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        round_once(browser, url)  # warm-up: the host's first instance of each component
        runs = [round_once(browser, url) for _ in range(rounds)]
        browser.close()
    med = lambda k: statistics.median(r[k] for r in runs)
    print(json.dumps({
        "rounds": rounds,
        "median_bytes": med("bytes"),
        "median_requests": med("requests"),
        "median_dom_interactive_ms": med("dom_interactive_ms"),
        "median_ready_ms": med("ready_ms"),
        "max_ready_ms": max(r["ready_ms"] for r in runs),
        "rows_drawn": runs[0]["rows"],
        "target": {"bytes": 100_000, "ready_ms": 300},
        "runs": runs,
    }, indent=1))


if __name__ == "__main__":
    main()
