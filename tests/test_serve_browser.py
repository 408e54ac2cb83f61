"""The web chat page in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

The driver path is given explicitly, so selenium-manager never downloads a browser or driver. Skipped only when no
chromium / chromedriver binary is installed (CI installs them with apt-get in .ci/run).
"""

import os
import shutil
import time

import httpx
import pytest

from nanolm_jax import runs
from nanolm_jax.serve import app as app_lib
from tests import test_serve

SCREENSHOT = os.path.join(os.environ.get("TMPDIR", "/tmp"), "nanolm_serve_chat.png")


def _binary(*names: str) -> str | None:
  for n in names:
    path = shutil.which(n) or (n if os.path.isabs(n) and os.access(n, os.X_OK) else None)
    if path:
      return path
  return None


CHROMIUM = _binary("chromium", "chromium-browser", "/usr/lib/chromium/chromium")
DRIVER = _binary("chromedriver", "/usr/lib/chromium/chromedriver", "/usr/bin/chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM and DRIVER),
        reason=(
            "no chromium/chromedriver binary found (apt-get install chromium chromium-driver); the web chat test needs "
            "a real browser"
        ),
    ),
]


@pytest.fixture(scope="module")
def browser():
  from selenium import webdriver  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.chrome.service import Service  # pylint: disable=g-import-not-at-top

  opts = webdriver.ChromeOptions()
  opts.binary_location = CHROMIUM
  for arg in (
      "--headless=new",
      "--no-sandbox",
      "--disable-dev-shm-usage",
      "--disable-gpu",
      "--window-size=1100,760",
      "--no-first-run",
      "--disable-extensions",
  ):
    opts.add_argument(arg)
  driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
  driver.set_page_load_timeout(30)
  driver.set_script_timeout(30)
  yield driver
  driver.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory, small_corpus, small_tokenizer):
  run = runs.load_run(test_serve.tiny_run_dir(tmp_path_factory, small_corpus, small_tokenizer))
  with test_serve.ServerThread(app_lib.create_app(run, test_serve.LIMITS)) as s:
    yield s


# Records every change of the assistant bubble's text, so the test can see the reply arrive in pieces.
_WATCH = """
window.__growth = [];
new MutationObserver(() => {
  const b = document.querySelectorAll('.msg.assistant .bubble');
  if (b.length) window.__growth.push(b[b.length - 1].textContent.length);
}).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
"""


def test_web_chat_streams_a_reply(browser, server):
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support import expected_conditions as ec  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=g-import-not-at-top

  browser.get(server.url + "/?seed=7")  # a reproducible sampled reply
  wait = WebDriverWait(browser, 60)
  wait.until(ec.text_to_be_present_in_element((By.ID, "model"), "tiny_chat"))
  # A sampled (not greedy) reply of several tokens, set through the page's own controls; the test_serve shapes
  # (8 tokens) are reused so nothing new compiles when both files run together.
  browser.execute_script(
      "document.getElementById('temperature').value = '1.0';"
      f"document.getElementById('max_tokens').value = '{test_serve.MAX_TOKENS}';"
  )
  browser.execute_script(_WATCH)
  box = browser.find_element(By.ID, "input")
  box.send_keys(test_serve.HELLO[0]["content"])
  browser.find_element(By.ID, "send").click()
  wait.until(
      lambda d: d.execute_script(
          "const b = document.querySelectorAll('.msg.assistant .bubble'); return b.length && b[0].dataset.done;"
      )
  )
  user = browser.find_element(By.CSS_SELECTOR, ".msg.user .bubble")
  reply = browser.find_element(By.CSS_SELECTOR, ".msg.assistant .bubble")
  assert user.text == test_serve.HELLO[0]["content"]
  assert "error" not in reply.get_attribute("class"), reply.text
  content = browser.execute_script("return arguments[0].textContent;", reply)
  assert content.strip(), "the assistant bubble stayed empty"
  chunks = int(reply.get_attribute("data-chunks") or 0)
  growth = browser.execute_script("return window.__growth;")
  # Streamed: the page parsed several SSE deltas and the bubble only ever grew, up to the whole reply. (How many
  # distinct sizes the observer saw depends on how the network batched the events, so that is not asserted.)
  assert chunks > 1, f"the reply arrived in {chunks} SSE chunk(s)"
  assert growth and growth == sorted(growth) and growth[-1] == len(content), (growth, content)
  time.sleep(0.2)  # let the meta line render before the screenshot
  browser.save_screenshot(SCREENSHOT)
  assert os.path.getsize(SCREENSHOT) > 1000


def test_tokenizer_page_colours_the_tokens(browser, server):
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=g-import-not-at-top

  text = "The function returns a list of values"
  want = httpx.post(server.url + "/v1/tokenize", json={"text": text}, timeout=30).json()  # the endpoint's answer
  browser.get(server.url + "/tokenizer")
  box = browser.find_element(By.ID, "text")
  box.clear()
  box.send_keys(text)  # typed: the page re-tokenizes on input
  wait = WebDriverWait(browser, 30)
  ids = ", ".join(str(t["id"]) for t in want["tokens"])
  wait.until(lambda d: d.find_element(By.ID, "ids").text == ids)  # the typed text's tokens, not the default text's
  wait.until(lambda d: d.find_element(By.ID, "model").text == "tiny_chat")
  spans = browser.find_elements(By.CSS_SELECTOR, "#tokens .tok")
  assert [int(s.get_attribute("data-id")) for s in spans] == [t["id"] for t in want["tokens"]]
  assert [browser.execute_script("return arguments[0].textContent;", s) for s in spans] == [
      t["text"] for t in want["tokens"]
  ]
  colours = [s.value_of_css_property("background-color") for s in spans]
  assert all(a != b for a, b in zip(colours, colours[1:])), colours  # neighbours are told apart
  assert browser.find_element(By.ID, "count").text == str(want["count"])
  assert browser.find_element(By.ID, "bytes").text == str(len(text))
  browser.save_screenshot(os.path.join(os.environ.get("TMPDIR", "/tmp"), "nanolm_serve_tokenizer.png"))
