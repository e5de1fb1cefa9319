"""The web console in a real browser (Debian's chromium, driven by Playwright) against a
live `troupe up` with authentication required: the key prompt, uploads through the file
input, live status, search with highlighted terms, the detail timeline, delete, a 415,
an axe-core scan and a 360 px pass. Screenshots of each step go to --screens.

Run by tests/all/console.rs; by hand:
  python tests/browser/console_test.py --url http://127.0.0.1:8080 --key trp_… --screens /tmp/s
"""

import argparse
import json
import pathlib
import re
import sys
import time
import urllib.request

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect, sync_playwright

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "pipeline"
# The browser logs every answer >= 400 as "Failed to load resource"; these are the
# refusals the test provokes on purpose (the wrong key, the .exe). Anything else fails.
PROVOKED = re.compile(r"^Failed to load resource: the server responded with a status of (401|415) ")
INDEXED_WITHIN_MS = 120_000


class Run:
    def __init__(self, page, screens):
        self.page = page
        self.screens = screens
        self.step = 0
        self.errors = []
        self.provoked = []
        page.on("console", self.on_console)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def on_console(self, msg):
        if msg.type != "error":
            return
        if PROVOKED.match(msg.text):
            self.provoked.append(msg.text)
        else:
            self.errors.append(f"console.error: {msg.text} ({msg.location.get('url', '?')})")

    def shot(self, name, full=True):
        self.step += 1
        path = self.screens / f"{self.step:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=full)
        print(f"screenshot {path}", flush=True)

    def axe(self, where):
        results = Axe().run(self.page)
        bad = [v for v in results.response["violations"] if v.get("impact") in ("serious", "critical")]
        assert not bad, f"axe-core at {where}: " + json.dumps(
            [{"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]]} for v in bad]
        )
        print(f"axe {where}: {len(results.response['violations'])} minor or moderate", flush=True)


def doc_row(page, name):
    return page.locator("#docs li.doc").filter(has=page.locator(".doc-name", has_text=re.compile(f"^{re.escape(name)}$")))


def upload_elsewhere(url, key, name, text):
    """A document uploaded by another client: the console must pick it up from the stream."""
    req = urllib.request.Request(
        f"{url}/v1/documents?name={name}",
        data=text.encode(),
        method="POST",
        headers={"content-type": "text/plain", "authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 202, resp.status


def search(page, query):
    page.fill("#query", query)
    page.click("#search-form button[type=submit]")
    expect(page.locator("#search-status")).not_to_have_text(re.compile("Searching"), timeout=30_000)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--key", required=True, help="a write key of the tenant")
    ap.add_argument("--screens", required=True, type=pathlib.Path)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    args.screens.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(20_000)
        page = context.new_page()
        run = Run(page, args.screens)
        try:
            steps(page, run, args)
        except Exception:
            run.shot("failure")
            raise
        finally:
            browser.close()
    assert not run.errors, "errors in the browser console:\n" + "\n".join(run.errors)
    print(f"console test passed in {time.monotonic() - started:.1f} s; provoked refusals logged: {len(run.provoked)}")


def steps(page, run, args):
    # Authentication is required: the console asks for a key; a wrong one shows the 401.
    page.goto(args.url + "/")
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("#auth")).to_be_visible()
    expect(page.locator("#auth-message")).to_contain_text("401")
    run.shot("key-prompt")
    page.fill("#auth-key", "trp_0123456789abcdef_" + "A" * 43)
    page.click("#auth-form button[type=submit]")
    expect(page.locator("#auth")).to_be_visible()
    expect(page.locator("#auth-message")).to_contain_text("401")
    run.shot("wrong-key")
    page.fill("#auth-key", args.key)
    page.click("#auth-form button[type=submit]")
    expect(page.locator("#auth")).to_be_hidden()
    expect(page.locator("#live")).to_have_attribute("data-state", "open")
    expect(page.locator("#docs-status")).to_contain_text("No documents yet")
    run.shot("signed-in")

    # Two files through the file input; both reach `indexed` without a reload.
    page.set_input_files("#file", [str(FIXTURES / "glacier.pdf"), str(FIXTURES / "volcano.html")])
    expect(page.locator("#uploads li[data-state=done]")).to_have_count(2)
    for name in ("glacier.pdf", "volcano.html"):
        expect(doc_row(page, name)).to_have_count(1)
    run.shot("uploaded")
    for name in ("glacier.pdf", "volcano.html"):
        expect(doc_row(page, name)).to_have_attribute("data-status", "indexed", timeout=INDEXED_WITHIN_MS)
    # A document another client uploads appears from the live stream alone.
    upload_elsewhere(args.url, args.key, "lighthouse.txt", (FIXTURES / "lighthouse.txt").read_text())
    expect(doc_row(page, "lighthouse.txt")).to_have_attribute("data-status", "indexed", timeout=INDEXED_WITHIN_MS)
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    expect(page.locator("#docs li.doc .facts").first).to_contain_text("batches")
    run.shot("indexed")
    run.axe("the document list")

    # A search finds the right document, the query's terms marked.
    search(page, "moraine left by a retreating glacier")
    first = page.locator("#hits li.hit").first
    expect(first.locator(".hit-name")).to_have_text("glacier.pdf")
    marks = [m.lower() for m in first.locator("mark").all_inner_texts()]
    assert marks and set(marks) <= {"moraine", "left", "by", "retreating", "glacier"}, marks
    run.shot("search")

    # Its hit opens the document: record fields and the timeline in event-time order.
    first.locator("a").click()
    expect(page.locator("#detail")).to_be_visible()
    expect(page.locator("#detail-title")).to_have_text("glacier.pdf")
    expect(page.locator("#detail-fields")).to_contain_text("Chunks")
    items = page.locator("#timeline li")
    expect(items.filter(has_text="document indexed")).to_have_count(1)
    types = [t for t in items.evaluate_all("els => els.map(e => e.dataset.type)")]
    assert types[0] == "troupe.document.uploaded.v1", types
    times = items.locator("time").evaluate_all("els => els.map(e => e.getAttribute('datetime'))")
    assert times == sorted(times), times
    run.shot("detail")
    run.axe("the detail page")
    page.click("text=← All documents")
    expect(page.locator("#home")).to_be_visible()

    # A type the pipeline cannot read: the server's 415 message, on the file's line.
    page.set_input_files(
        "#file", [{"name": "setup.exe", "mimeType": "application/x-msdownload", "buffer": b"MZ\x90\x00" * 64}]
    )
    bad = page.locator("#uploads li.upload[data-name='setup.exe']")
    expect(bad).to_have_attribute("data-state", "error")
    expect(bad).to_contain_text("415")
    expect(bad).to_contain_text("not a type Troupe reads")
    run.shot("unsupported")

    # Delete, confirmed: gone from the list, and from search.
    page.once("dialog", lambda d: d.accept())
    doc_row(page, "glacier.pdf").get_by_role("button", name="Delete glacier.pdf").click()
    expect(doc_row(page, "glacier.pdf")).to_have_count(0)
    deadline = time.monotonic() + 30
    while True:
        search(page, "moraine left by a retreating glacier")
        names = page.locator("#hits .hit-name").all_inner_texts()
        if "glacier.pdf" not in names:
            break
        assert time.monotonic() < deadline, f"deleted document still found: {names}"
        time.sleep(0.5)
    expect(doc_row(page, "volcano.html")).to_have_count(1)
    run.shot("deleted")

    # 360 px wide: nothing overflows sideways, everything still reachable.
    page.set_viewport_size({"width": 360, "height": 780})
    page.wait_for_timeout(200)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the page is {width} px wide at a 360 px viewport"
    run.shot("narrow")
    run.axe("360 px")
    doc_row(page, "volcano.html").locator(".doc-name").click()
    expect(page.locator("#timeline li").first).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the detail page is {width} px wide at a 360 px viewport"
    run.shot("narrow-detail")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
