"""The offline HTML viewer in a real headless Chromium: rendered DOM, real clicks, a screenshot.

    PYTHONPATH=. .venv/bin/pytest tests/test_viewer_browser.py -q

Needs the Debian packages `chromium` (CI: `apt-get install -y chromium`); skipped with a
reason when no Chromium binary is found. The browser is driven over the DevTools
protocol by mcts_po.graphs.headless_chromium (standard library only). The screenshot
is saved as `viewer.png` in the test's tmp dir (its path is printed; run with -s).
"""

from __future__ import annotations

import pytest

from mcts_po.graphs.headless_chromium import ChromiumPage, find_chromium
from mcts_po.graphs.html_viewer import write_viewer
from test_graphs import STEP_ONE_TEXT, build_hand_tree, build_unsolved_tree

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (Debian: apt-get install chromium)")

READY = "document.body && document.body.getAttribute('data-ready') === '1'"


def node_ids(page: ChromiumPage, selector: str) -> list[int]:
    return page.evaluate(f"Array.from(document.querySelectorAll({selector!r})).map(e => Number(e.dataset.nodeId))")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    out = tmp_path_factory.mktemp("viewer")
    # pairs from the local sibling rule, so that both of the hand tree's pairs are marked
    path = write_viewer([build_hand_tree(), build_unsolved_tree()], out / "run.html", title="browser test",
                        pair_source="siblings")
    with ChromiumPage(CHROMIUM, width=1400, height=900) as browser:
        browser.open(path.resolve().as_uri(), ready=READY)
        browser.out_dir = out
        yield browser


def test_every_tree_node_is_rendered(page):
    tree = build_hand_tree()
    assert page.evaluate("document.querySelectorAll('.node').length") == len(tree) == 7
    assert sorted(node_ids(page, ".node")) == list(range(7))
    assert page.evaluate("document.querySelectorAll('.node.kind-plan').length") == 1
    assert page.evaluate("document.title") == "browser test"


def test_best_path_and_pair_are_highlighted(page):
    assert node_ids(page, ".node.best-path") == [1, 3]
    assert sorted(node_ids(page, ".node.pair-chosen")) == [1, 3]
    assert sorted(node_ids(page, ".node.pair-rejected")) == [2, 4]
    # the highlight is visible, not only a class: chosen and rejected rows get different coloured bars
    chosen = page.evaluate("getComputedStyle(document.querySelector('.node[data-node-id=\"3\"]')).boxShadow")
    rejected = page.evaluate("getComputedStyle(document.querySelector('.node[data-node-id=\"4\"]')).boxShadow")
    assert "rgb(21, 128, 61)" in chosen and "rgb(185, 28, 28)" in rejected


def test_clicking_a_node_shows_its_full_text_and_values(page):
    page.click('.node[data-node-id="1"]')
    assert page.evaluate("document.getElementById('detail-text').textContent") == STEP_ONE_TEXT
    detail = page.evaluate("document.getElementById('detail').textContent")
    assert "Node #1 · step · depth 1" in detail and "chosen over #2 (children of #0)" in detail
    assert "self_eval0.8000" in detail and "visits N4" in detail and "logprob_sum-3.5000" in detail
    assert node_ids(page, ".node.selected") == [1]
    assert node_ids(page, ".node.partner") == [2]  # the rejected sibling is outlined too

    page.click('.node[data-node-id="4"]')
    assert page.evaluate("document.getElementById('detail-text').textContent") == "The answer is 6."
    detail = page.evaluate("document.getElementById('detail').textContent")
    assert "rejected against #3" in detail and "answer6" in detail and "correctfalse" in detail
    assert node_ids(page, ".node.selected") == [4]


def test_toggle_folds_children_and_colour_mode_switches(page):
    visible = "document.querySelector('.node[data-node-id=\"3\"]').offsetParent !== null"
    assert page.evaluate(visible) is True
    page.click('.node[data-node-id="1"] .toggle')
    assert page.evaluate(visible) is False
    page.click('.node[data-node-id="1"] .toggle')
    assert page.evaluate(visible) is True
    background = "getComputedStyle(document.querySelector('.node[data-node-id=\"2\"]')).backgroundColor"
    q_colour = page.evaluate(background)
    page.evaluate("var s=document.getElementById('color-mode'); s.value='verdict'; s.dispatchEvent(new Event('change'))")
    assert page.evaluate(background) == "rgb(254, 226, 226)" != q_colour  # only wrong answers below node 2
    page.evaluate("var s=document.getElementById('color-mode'); s.value='q'; s.dispatchEvent(new Event('change'))")


def test_screenshot_and_problem_selector(page):
    shot = page.screenshot(page.out_dir / "viewer.png")
    print(f"viewer screenshot: {shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    page.evaluate("var s=document.getElementById('problem-select'); s.value='1'; s.dispatchEvent(new Event('change'))")
    assert page.evaluate("document.querySelectorAll('.node').length") == len(build_unsolved_tree()) == 2
    assert page.evaluate("location.hash") == "#problem=p-unsolved"
