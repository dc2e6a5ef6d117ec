#!/usr/bin/env python3
"""The chat page in headless Chromium through Selenium, against a running `sarvam serve`.

    page_test.py --url http://127.0.0.1:PORT --key sk-... --metrics http://127.0.0.1:PORT2/metrics
                 --context TOKENS --artifacts FOLDER

Each step checks what a person would see and saves FOLDER/NN-step.png. Exits 0 when every step
passed; otherwise prints the failed step and its reason (the screenshot of the failure is saved too).
Replies come from the real model, so checks are about the page's behaviour (streaming, stop,
rendering, history), never about the model's exact words. Waits are explicit and generous: the
machine may be busy with other builds.
"""
import argparse
import json
import os
import re
import signal
import sys
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import (
    ElementNotInteractableException, NoAlertPresentException, StaleElementReferenceException, TimeoutException)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

SHORT = 30      # seconds: page actions that involve no generation
REPLY = 240     # seconds: a whole reply of the model (at most the context's room) on a busy machine


class StepFailed(Exception):
    pass


class Page:
    def __init__(self, args):
        self.args = args
        self.url = args.url.rstrip("/") + "/"
        self.shots = []
        options = webdriver.ChromeOptions()
        options.binary_location = args.chromium
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,860"):
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(args.chromedriver), options=options)
        self.driver.set_page_load_timeout(SHORT)

    # ---- helpers ----
    def shot(self, name):
        path = os.path.join(self.args.artifacts, name + ".png")
        self.driver.save_screenshot(path)
        self.shots.append(os.path.basename(path))

    def wait(self, seconds, condition, what):
        try:
            # Stale elements are retried: the page rebuilds its lists and replies as they change.
            return WebDriverWait(self.driver, seconds, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]).until(
                lambda d: condition())
        except TimeoutException:
            raise StepFailed(f"timed out after {seconds} s waiting for {what}")

    def find(self, css):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def one(self, css):
        return self.wait(SHORT, lambda: (self.find(css) or [None])[0], css)

    def click(self, css):
        """Clicks the first match of `css`, finding it again when the page re-rendered it meanwhile
        (the conversation list is rebuilt whenever it is reloaded)."""
        def clicked():
            try:
                found = self.find(css)
                if found:
                    found[0].click()
                return bool(found)
            except StaleElementReferenceException:
                return False
        self.wait(SHORT, clicked, "to click " + css)

    def visible(self, element_id):
        found = self.find("#" + element_id)
        return bool(found) and found[0].is_displayed()

    def replies(self):
        return self.find("#messages .msg.assistant")

    def bodies(self):
        return [m.text for m in self.find("#messages .msg .body")]

    def idle(self):
        """The page is not streaming: Send is shown, Stop hidden."""
        return self.visible("send") and not self.visible("stop")

    def type_and_send(self, text):
        box = self.one("#input")
        box.clear()
        box.send_keys(text)
        self.one("#send").click()

    def paste_and_send(self, text):
        """Puts `text` in the message box at once, as a paste does (typing thousands of characters is slow)."""
        self.driver.execute_script(
            "const t = document.getElementById('input'); t.value = arguments[0];"
            " t.dispatchEvent(new Event('input', { bubbles: true }));", text)
        self.one("#send").click()

    def api(self, path):
        request = urllib.request.Request(self.url.rstrip("/") + path, headers={"Authorization": "Bearer " + self.args.key})
        with urllib.request.urlopen(request, timeout=SHORT) as r:
            return json.load(r)

    def conversation(self):
        """The conversation the page shows, as the server stores it."""
        conversation_id = self.driver.execute_script("return state.conv && state.conv.id")
        if not conversation_id:
            raise StepFailed("the page has no open conversation")
        return self.api("/api/conversations/" + conversation_id)

    def last_stored_id(self):
        return self.conversation()["messages"][-1]["id"]

    def wait_new_reply(self, previous_id, what):
        """Waits until the page is idle again and the server holds a reply newer than `previous_id`; returns it."""
        def ended():
            if not self.idle():
                return None
            last = self.conversation()["messages"][-1]
            return last if last["role"] == "assistant" and last["id"] != previous_id else None
        reply = self.wait(REPLY, ended, what)
        self.check_last_reply_in_view()
        return reply

    def check_last_reply_in_view(self):
        """The end of the newest reply (its stats line) is inside the scrolled message list: a person sees it."""
        seen = self.driver.execute_script(
            "const box = document.getElementById('messages').getBoundingClientRect();"
            " const all = document.querySelectorAll('#messages .msg.assistant .stats');"
            " const r = all[all.length - 1].getBoundingClientRect();"
            " return r.top >= box.top - 1 && r.bottom <= box.bottom + 1;")
        if not seen:
            raise StepFailed("the end of the newest reply is scrolled out of view")

    def cancelled_count(self):
        with urllib.request.urlopen(self.args.metrics, timeout=SHORT) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("sarvam_engine_requests_total{") and 'outcome="cancelled"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def alert(self):
        try:
            return self.driver.switch_to.alert
        except NoAlertPresentException:
            return None


def wait_until_loaded(page):
    """The page has loaded its conversations and opened one (or a new chat): the top bar no longer says
    just "Sarvam", as the HTML does before the script has run."""
    page.wait(SHORT, lambda: page.one("#convTitle").text not in ("", "Sarvam"), "the page to load its conversations")


# ---- sign-in and sign-out: the only steps that know how the page identifies its user ----
def sign_in(page):
    """Signs in with user name and password in the form the page shows a visitor without a session; the
    session is an HttpOnly cookie, so nothing of it is readable by the page's script or kept in storage."""
    page.driver.get(page.url)
    page.wait(SHORT, lambda: page.visible("signinDialog"), "the sign-in form of a visitor without a session")
    page.one("#signin-user").send_keys(page.args.user)
    page.one("#signin-password").send_keys("not the password")
    page.one("#signin-submit").click()
    page.wait(SHORT, lambda: page.one("#signinError").text.strip() != "", "the error for a wrong password")
    page.one("#signin-password").clear()
    page.one("#signin-password").send_keys(page.args.password)
    page.one("#signin-submit").click()
    page.wait(SHORT, lambda: not page.visible("signinDialog"), "the sign-in form to close")
    wait_until_loaded(page)
    if page.driver.execute_script("return document.cookie"):
        raise StepFailed("the session cookie is readable by the page's script (not HttpOnly)")
    if page.driver.execute_script("return window.localStorage.length"):
        raise StepFailed("the page keeps something in localStorage")
    if page.args.user not in page.one("#whoami").text:
        raise StepFailed("the page does not show who is signed in")


def sign_out(page):
    """Signs out with the page's button: the sign-in form comes back, also after a reload, with nothing listed."""
    page.one("#signout").click()
    page.wait(SHORT, lambda: page.visible("signinDialog"), "the sign-in form after signing out")
    page.driver.refresh()
    page.wait(SHORT, lambda: page.visible("signinDialog"), "the sign-in form after a reload")
    if page.find("#convs li"):
        raise StepFailed("conversations are listed while signed out")


# ---- the steps ----
def step_sign_in(page):
    sign_in(page)
    page.shot("01-signin")


def watch_stream(page):
    """The texts of the newest reply, read from the DOM while it streams, each longer than the one before:
    returns once 3 were seen or the reply ended."""
    states = []
    deadline = time.monotonic() + REPLY
    while len(states) < 3 and time.monotonic() < deadline:
        try:
            text = page.replies()[-1].find_element(By.CSS_SELECTOR, ".body").text
        except (StaleElementReferenceException, IndexError):
            continue
        if len(text) > (len(states[-1]) if states else 0):
            states.append(text)
        if page.idle():
            break
        time.sleep(0.05)
    return states


def keep_streaming(page, regenerate):
    """Watches the newest reply until it has grown in 3 visible steps while still streaming. The model
    samples, so a reply that came out short (code instead of the count) is regenerated, at most 3 times;
    a long reply that grew in fewer steps is the page's fault."""
    for attempt in range(4):
        if regenerate:
            page.click("#messages .msg.assistant .actions button")
            page.wait(SHORT, lambda: not page.idle(), "the regenerated reply to start")
        regenerate = True
        states = watch_stream(page)
        if len(states) >= 3 and not page.idle():
            return states
        page.wait(REPLY, page.idle, "the reply to end")
        stored = page.conversation()["messages"][-1]
        if (stored.get("token_count") or 0) >= 60:
            raise StepFailed(
                f"a reply of {stored['token_count']} tokens grew in {len(states)} visible steps, expected at least 3: {states}")
        print(f"streaming: attempt {attempt + 1} gave a short reply ({stored.get('token_count')} tokens): {stored['content']!r}")
    raise StepFailed("the model gave no long reply in 4 tries; streaming and Stop could not be checked")


def step_start_chat_and_stream(page):
    """A long reply must grow on the page in at least 3 steps while it streams."""
    page.one("#newChat").click()
    page.wait(SHORT, lambda: page.find("#messages .empty"), "an empty new chat")
    page.one("#input").send_keys("Count from 1 to 200, one number per line, nothing else. Do not write code.")
    page.shot("02-chat-started")   # before Send: a screenshot while the reply streams would hide its first steps
    page.one("#send").click()
    page.wait(REPLY, lambda: page.replies(), "the reply to appear")
    states = keep_streaming(page, regenerate=False)
    if not page.find("#messages .msg.user"):
        raise StepFailed("the user's message is not shown")
    page.shot("03-streaming")
    print(f"streaming: {len(states)} growing states seen, the last {len(states[-1])} characters")


def step_stop(page):
    before = page.cancelled_count()
    for _ in range(3):
        try:
            page.one("#stop").click()
            break
        except ElementNotInteractableException:
            if not page.idle():
                raise
            keep_streaming(page, regenerate=True)   # the reply ended on its own just before the click
    else:
        raise StepFailed("every reply ended on its own before Stop could be clicked")
    page.wait(SHORT, page.idle, "Send to come back after Stop")
    page.wait(SHORT, lambda: "stopped" in page.replies()[-1].find_element(By.CSS_SELECTOR, ".stats").text, "the 'stopped' marker")
    text = page.replies()[-1].find_element(By.CSS_SELECTOR, ".body").text
    time.sleep(2)
    if page.replies()[-1].find_element(By.CSS_SELECTOR, ".body").text != text:
        raise StepFailed("the reply still grows after Stop")
    page.wait(SHORT, lambda: page.cancelled_count() >= before + 1, "sarvam_engine_requests_total{outcome=\"cancelled\"} to count the stop")
    stored = page.conversation()["messages"][-1]
    if stored["role"] != "assistant" or stored["status"] != "stopped":
        raise StepFailed(f"the server stored the stopped reply as {stored.get('status')!r}")
    page.shot("04-stopped")
    print(f"stop: the reply ended at {len(text)} characters; cancellations counted {before:.0f} -> {page.cancelled_count():.0f}")


def step_code_block(page):
    """A reply with a fenced block shows it as code with a Copy button that puts the code on the clipboard."""
    page.driver.execute_cdp_cmd("Browser.grantPermissions", {
        "origin": page.url.rstrip("/"), "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
    prompt = "Write a Python function add(a, b) that returns a + b. Reply with only a fenced code block."
    for attempt in range(3):
        previous = page.last_stored_id()
        if attempt == 0:
            page.type_and_send(prompt)
        else:   # the model answered without a fence: ask it again
            page.click("#messages .msg.assistant .actions button")
        stored = page.wait_new_reply(previous, "the code reply to end")
        if "```" in stored["content"]:
            break
        print(f"code block: attempt {attempt + 1} had no fence: {stored['content']!r}")
    else:
        raise StepFailed("the model gave no fenced code block in 3 tries; the rendering could not be checked")
    fenced = re.search(r"```[\w+#.-]*\n(.*?)(?:```|$)", stored["content"], re.S)
    expected = fenced.group(1).rstrip("\n") if fenced else ""
    reply = page.replies()[-1]
    blocks = reply.find_elements(By.CSS_SELECTOR, ".body pre > code")
    if not blocks:
        raise StepFailed("the fenced block is not rendered as <pre><code>: " + reply.get_attribute("textContent"))
    code = blocks[0].get_attribute("textContent")
    if code.strip() != expected.strip():
        raise StepFailed(f"the code element holds {code!r}, the fence held {expected!r}")
    if "```" in reply.find_element(By.CSS_SELECTOR, ".body").text:
        raise StepFailed("the fence markers are shown as text")
    if blocks[0].value_of_css_property("font-family").find("mono") < 0:
        raise StepFailed("the code is not in a monospace font: " + blocks[0].value_of_css_property("font-family"))
    copy = reply.find_elements(By.CSS_SELECTOR, ".body pre > button.copy")
    if not copy or not copy[0].is_displayed():
        raise StepFailed("the code block has no visible Copy button")
    copy[0].click()
    page.wait(SHORT, lambda: copy[0].text == "Copied", "the Copy button to say Copied")
    page.shot("05-code-block")
    clipboard = page.driver.execute_async_script(
        "const done = arguments[arguments.length - 1]; navigator.clipboard.readText().then(done, (e) => done('ERROR ' + e));")
    if clipboard != code:
        raise StepFailed(f"the clipboard holds {clipboard!r}, not the code {code!r}")
    print(f"code block: {len(code)} characters of code, copied to the clipboard")


def step_regenerate(page):
    before = page.conversation()["messages"]
    buttons = page.find("#messages .msg.assistant .actions button")
    if not buttons or buttons[-1].text != "Regenerate":
        raise StepFailed("the last reply has no Regenerate button")
    old = page.replies()[-1]
    buttons[-1].click()
    page.wait_new_reply(before[-1]["id"], "the regenerated reply to end")
    after = page.conversation()["messages"]
    if [m["id"] for m in after[:-1]] != [m["id"] for m in before[:-1]] or after[-1]["id"] == before[-1]["id"]:
        raise StepFailed("Regenerate should replace only the last reply: "
                         f"{[m['id'] for m in before]} -> {[m['id'] for m in after]}")
    try:
        old.is_displayed()
        raise StepFailed("the old reply is still on the page")
    except StaleElementReferenceException:
        pass
    if len(page.replies()) != sum(1 for m in after if m["role"] == "assistant"):
        raise StepFailed("the page shows a different number of replies than the server stored")
    page.shot("06-regenerated")


def step_reload(page):
    title = page.one("#convTitle").text
    bodies = page.bodies()
    conversation_id = page.conversation()["id"]
    page.driver.refresh()
    wait_until_loaded(page)
    page.wait(SHORT, lambda: page.driver.execute_script("return state.conv && state.conv.id") == conversation_id,
              "the same conversation to open after the reload")
    page.wait(SHORT, lambda: len(page.find("#messages .msg")) == len(bodies), f"the {len(bodies)} messages after the reload")
    if page.bodies() != bodies:
        raise StepFailed(f"the conversation differs after the reload:\n{bodies}\n---\n{page.bodies()}")
    if page.one("#convTitle").text != title:
        raise StepFailed(f"the title changed on reload: {title!r} -> {page.one('#convTitle').text!r}")
    stats = page.replies()[0].find_element(By.CSS_SELECTOR, ".stats").text
    if "stopped" not in stats:
        raise StepFailed(f"the stopped reply lost its 'stopped' marker on reload: {stats!r}; stored: {page.conversation()['messages'][1]}")
    page.shot("07-reloaded")


def words(count):
    """`count` words of ordinary text; each word with its leading space is one token of the model's vocabulary."""
    pool = "the quick brown fox jumps over the lazy dog while a small bird sings in the old green tree near the river".split()
    return " ".join(pool[i % len(pool)] for i in range(count))


def step_long_paste(page):
    """A paste longer than the whole context gets the server's clear error; a paste that fits only
    without the older turns is answered, and the page says how many turns were left out."""
    messages = len(page.find("#messages .msg"))
    page.paste_and_send("Summarize this text: " + words(page.args.context * 2))
    page.wait(SHORT, lambda: page.visible("error") and page.idle(), "the error for a message longer than the context")
    error = page.one("#error").text
    match = re.search(r"needs (\d+) prompt tokens plus (\d+) reserved", error)
    if "maximum context length" not in error or not match:
        raise StepFailed("unexpected error for an oversized paste: " + error)
    if len(page.find("#messages .msg")) != messages:
        raise StepFailed("the refused message was added to the conversation")
    if not page.one("#input").get_attribute("value").startswith("Summarize this text: the quick"):
        raise StepFailed("the refused paste is gone from the message box: the user would have to paste it again")
    page.shot("08-paste-too-long")
    # The refused paste tells the cost of everything but its words: fill the room up to 24 tokens
    # short, so the paste fits alone but not after the turns before it (well over 24 tokens).
    overhead = int(match.group(1)) - page.args.context * 2
    room = page.args.context - int(match.group(2)) - overhead - 24
    previous = page.last_stored_id()
    page.paste_and_send(words(room) + " Reply with one word.")
    page.wait_new_reply(previous, "the reply to the long paste")
    if page.visible("error"):
        raise StepFailed("the fitting paste was refused: " + page.one("#error").text)
    stats = page.replies()[-1].find_element(By.CSS_SELECTOR, ".stats").text
    left_out = re.search(r"(\d+) old turns? left out", stats)
    stored = page.conversation()["messages"][-1]
    if not left_out or int(left_out.group(1)) != stored.get("dropped_turns"):
        raise StepFailed(f"the reply's line should say the server's {stored.get('dropped_turns')} old turns were left out: {stats!r}")
    page.shot("09-old-turns-left-out")
    print(f"long paste: {room} words fit; the page says {left_out.group(0)!r}")


def step_rename(page):
    page.click("#convs li.active button[title=Rename]")
    alert = page.wait(SHORT, page.alert, "the rename prompt")
    alert.send_keys("Browser test chat")
    alert.accept()
    page.wait(SHORT, lambda: page.one("#convTitle").text == "Browser test chat", "the new title on top")
    page.wait(SHORT, lambda: page.one("#convs li.active .t").text == "Browser test chat", "the new title in the list")
    if page.conversation()["title"] != "Browser test chat":
        raise StepFailed("the server did not keep the new title")
    page.shot("10-renamed")


def step_delete(page):
    conversation_id = page.conversation()["id"]
    page.click("#convs li.active button[title=Delete]")
    alert = page.wait(SHORT, page.alert, "the delete confirmation")
    if "Browser test chat" not in alert.text:
        raise StepFailed("the confirmation does not name the conversation: " + alert.text)
    alert.accept()
    page.wait(SHORT, lambda: "Browser test chat" not in [e.text for e in page.find("#convs li .t")], "the conversation to leave the list")
    page.wait(SHORT, lambda: page.find("#messages .empty"), "the empty conversation")
    try:
        page.api("/api/conversations/" + conversation_id)
        raise StepFailed("the server still has the deleted conversation")
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise
    page.shot("11-deleted")


def step_sign_out(page):
    sign_out(page)
    page.shot("12-signed-out")


STEPS = [step_sign_in, step_start_chat_and_stream, step_stop, step_code_block, step_regenerate, step_reload,
         step_long_paste, step_rename, step_delete, step_sign_out]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True, help="an API key of the user, for the checks through the API")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--metrics", required=True, help="the server's /metrics URL (no key)")
    parser.add_argument("--context", type=int, required=True, help="the server's --context")
    parser.add_argument("--artifacts", required=True)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds for the whole run")
    args = parser.parse_args()

    def overtime(*_):
        raise StepFailed(f"the whole run took over {args.timeout} s")
    signal.signal(signal.SIGALRM, overtime)
    signal.alarm(args.timeout)
    os.makedirs(args.artifacts, exist_ok=True)
    page = Page(args)
    started = time.monotonic()
    try:
        for step in STEPS:
            t = time.monotonic()
            try:
                step(page)
            except Exception as e:
                try:
                    page.shot("failed-" + step.__name__)
                except Exception:
                    pass
                logs = page.driver.get_log("browser") if hasattr(page.driver, "get_log") else []
                print(f"FAILED {step.__name__}: {type(e).__name__}: {getattr(e, 'msg', None) or e}")
                for entry in logs:
                    print("browser console:", entry.get("message"))
                return 1
            print(f"ok {step.__name__} ({time.monotonic() - t:.1f} s)")
        print(f"PASSED {len(STEPS)} steps in {time.monotonic() - started:.0f} s; screenshots in {args.artifacts}: {' '.join(page.shots)}")
        return 0
    finally:
        page.driver.quit()


if __name__ == "__main__":
    sys.exit(main())
