#!/usr/bin/env python3
"""The web console in a real browser: Debian's headless Chromium through its
chromedriver, driven by Selenium (tests/deps installs both), against a sluice
that tests/integration/test_console_browser.c started with a Kafka, a Redis
and a Postgres source on the real services.

  console_browser.py SETTINGS.json

SETTINGS: {"url", "token", "kafka": {"brokers", "topic"}, "redis": {"url",
"key", "dlq"}, "pg": {"dsn", "table"}, "code_dir", "shots", "result"}

Checks, in order:
  1. the token form: the console asks for the bearer token once (server.auth);
  2. the overview shows the three sources with non-zero records/s, and the
     functions with invocations/s;
  3. disabling the Kafka source from its page stops it: records produced
     after are not processed until it is enabled again, then all of them are;
  4. a Redis message whose handler fails is dead-lettered; its page shows the
     payload (hostile HTML, as text); after the handler is fixed it is
     redriven from the page, arrives and is processed;
  5. the live tail shows the handler's print, hostile output as text;
  6. nowhere did an alert open or an injected element appear.
Screenshots of each page go to SETTINGS["shots"]. The result (what was seen)
is written to SETTINGS["result"] as JSON for the C test to check again.
"""
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".layers",
                                "selenium"))
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

S = json.load(open(sys.argv[1]))
RESULT = {}
HOSTILE = '<script>alert("xss")</script><img src=x onerror="alert(1)">'


def log(*a):
    print("console_browser:", *a, file=sys.stderr, flush=True)


def http(path, method="GET", body=None):
    req = urllib.request.Request(S["url"] + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Authorization", "Bearer " + S["token"])
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(series):
    """A sample of /metrics, 0 when absent."""
    _, text = http("/metrics")
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def succeeded(source):
    return metric('sluice_source_records_total{source="%s",outcome="succeeded"}' % source)


def wait(what, cond, timeout=60, step=0.5):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("timed out waiting for " + what)


# ---------------------------------------------------------------- producing

def kafka(values):
    data = "".join(v + "\n" for v in values)
    subprocess.run(["kcat", "-P", "-b", S["kafka"]["brokers"], "-t", S["kafka"]["topic"], "-p", "0"],
                   input=data.encode(), check=True, timeout=30)


def redis(*args):
    url = S["redis"]["url"]
    subprocess.run(["redis-cli", "-u", url, "--no-auth-warning"] + list(args), check=True,
                   stdout=subprocess.DEVNULL, timeout=10)


def pg(sql):
    subprocess.run(["psql", "-q", "-X", S["pg"]["dsn"], "-c", sql], check=True,
                   stdout=subprocess.DEVNULL, timeout=10)


class Producer(threading.Thread):
    """A steady trickle into every source, so each has a rate."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.n = 0

    def run(self):
        while not self.stop.is_set():
            self.n += 1
            try:
                kafka(['{"n":%d}' % self.n])
                redis("XADD", S["redis"]["key"], "*", "body", "tick %d" % self.n)
                pg("INSERT INTO %s VALUES (%d, 'tick')" % (S["pg"]["table"], 100000 + self.n))
            except Exception as e:  # a slow service must not kill the thread
                log("producer:", e)
            self.stop.wait(0.4)


# ---------------------------------------------------------------- browser

def browser():
    o = webdriver.ChromeOptions()
    o.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1280,900", "--hide-scrollbars", "--disable-extensions",
              "--no-first-run", "--disable-background-networking"):
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)


def no_alert(d, where):
    try:
        a = d.switch_to.alert
        text = a.text
        a.dismiss()
        raise AssertionError("an alert opened on %s: %r" % (where, text))
    except NoAlertPresentException:
        pass
    # nothing injected: no image, no script but the console's own two
    imgs = d.execute_script("return document.querySelectorAll('img').length")
    scripts = d.execute_script(
        "return Array.from(document.scripts).map(function (s) { return s.src; })")
    assert imgs == 0, "an <img> was injected on %s" % where
    assert len(scripts) == 2 and all("/console/" in s for s in scripts), \
        "unexpected scripts on %s: %r" % (where, scripts)
    assert d.execute_script("return window.__xss === undefined"), "injected code ran"


def shot(d, name):
    if S.get("shots"):
        os.makedirs(S["shots"], exist_ok=True)
        d.save_screenshot(os.path.join(S["shots"], name + ".png"))


def text_of(d, css):
    """The text of the first match, read in one script (the views re-render)."""
    return d.execute_script("var e = document.querySelector(arguments[0]);"
                            "return e ? e.textContent : '';", css)


def click(d, id_):
    d.execute_script("document.getElementById(arguments[0]).click()", id_)


def main():
    d = browser()
    prod = Producer()
    try:
        # 1. the token, asked once
        d.get(S["url"] + "/console/")
        wait("the token form", lambda: d.find_element(By.ID, "login").is_displayed(), 20)
        d.find_element(By.ID, "token").send_keys(S["token"])
        d.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
        wait("the overview", lambda: d.find_elements(By.CSS_SELECTOR, "tr[data-source]"), 20)
        assert d.execute_script("return sessionStorage.getItem('sluice.token')") == S["token"]
        RESULT["token_kept_in_session"] = True

        # 2. rates on the overview
        prod.start()

        def rates():
            cells = {}
            for s in ("k", "r", "p"):
                t = text_of(d, 'tr[data-source="%s"] td.rate' % s)
                try:
                    cells[s] = float(t)
                except ValueError:
                    return None
            return cells if all(v > 0 for v in cells.values()) else None
        seen = wait("non-zero records/s for every source on the overview", rates, 90, 1)
        # for the documentation's screenshots: an hour's charts need some history
        time.sleep(float(os.environ.get("SLUICE_CONSOLE_WARMUP_S", "0")))
        RESULT["overview_rates"] = seen
        inv = text_of(d, 'tr[data-function="work"] td.rate')
        RESULT["overview_invocations_per_s"] = float(inv)
        assert float(inv) > 0
        assert d.find_elements(By.CSS_SELECTOR, ".chart .uplot"), "no chart drawn"
        RESULT["charts"] = len(d.find_elements(By.CSS_SELECTOR, ".chart .uplot"))
        no_alert(d, "overview")
        shot(d, "overview")
        prod.stop.set()
        prod.join()

        # 3. disable the Kafka source from its page
        d.get(S["url"] + "/console/#/source/k")
        wait("the source page", lambda: text_of(d, "#source-state") == "Enabled", 20)
        time.sleep(1)
        shot(d, "source")
        click(d, "toggle")
        wait("the source disabled", lambda: text_of(d, "#source-state") == "Disabled", 30)
        before = succeeded("k")
        kafka(['{"after_disable":%d}' % i for i in range(5)])
        time.sleep(6)
        after = succeeded("k")
        RESULT["disabled_processed"] = after - before
        assert after == before, "a disabled source processed %d records" % (after - before)
        click(d, "toggle")
        wait("the source enabled", lambda: text_of(d, "#source-state") == "Enabled", 30)
        wait("the records produced while disabled", lambda: succeeded("k") >= before + 5, 60)
        RESULT["enabled_processed"] = succeeded("k") - before
        # the batch size, through UpdateEventSourceMapping
        d.execute_script("document.getElementById('batch-size').value = '7'")
        click(d, "save-batch")
        wait("the batch size saved", lambda: json.loads(http("/console/api/sources/k")[1])
             .get("batch_size") == 7, 20)
        RESULT["batch_size"] = 7

        # 4. a dead letter, hostile, redriven from the page
        redis("XADD", S["redis"]["key"], "*", "body", "poison " + HOSTILE)
        sink = S["redis"]["dlq"]

        def dead():
            st, body = http("/console/api/dlq/" + sink)
            return st == 200 and json.loads(body)["entries"] or None
        entries = wait("the poison message in the dead-letter sink", dead, 60)
        entry = entries[0]
        RESULT["dlq_entry"] = {k: entry[k] for k in ("kind", "function", "condition")}
        assert entry["kind"] == "message"
        d.get(S["url"] + "/console/#/dlq/" + sink)
        wait("the dead letters", lambda: d.find_elements(By.CSS_SELECTOR, "tr[data-entry]"), 20)
        assert HOSTILE in text_of(d, "tr[data-entry] td.summary")
        no_alert(d, "dead letters")
        shot(d, "dead-letters")
        d.get(S["url"] + "/console/#/dlq/%s/%s" % (sink, entry["id"]))
        wait("the entry", lambda: text_of(d, "#entry-payload"), 20)
        assert HOSTILE in text_of(d, "#entry-payload"), text_of(d, "#entry-payload")
        no_alert(d, "dead letter")
        shot(d, "dead-letter")
        # the handler is fixed: it reads /var/task/healed
        open(os.path.join(S["code_dir"], "healed"), "w").close()
        before = succeeded("r")
        click(d, "entry-redrive")
        wait("the redrive answered", lambda: "redriven: 1" in text_of(d, "#dlq-message")
             or d.execute_script("return location.hash") == "#/dlq/" + sink, 20)
        wait("the redriven message processed", lambda: succeeded("r") >= before + 1, 60)
        wait("the sink emptied", lambda: not dead(), 20)
        RESULT["redriven_processed"] = succeeded("r") - before

        # 5. the live tail: the handler prints what it handled
        probe = urllib.request.Request(S["url"] + "/logs/tail?since=1s&function=nope")
        probe.add_header("Authorization", "Bearer " + S["token"])
        try:
            with urllib.request.urlopen(probe, timeout=3) as r:
                tail_there = r.status == 200
        except urllib.error.HTTPError as e:
            tail_there = e.code != 404
        except Exception:
            tail_there = True  # a stream that did not end within 3 s: it is there
        if tail_there:
            d.get(S["url"] + "/console/#/tail?function=work&since=10m")
            redis("XADD", S["redis"]["key"], "*", "body", "tailme " + HOSTILE)
            wait("the handler's print in the tail",
                 lambda: "handled tailme" in text_of(d, "#tail-lines"), 60)
            assert HOSTILE in text_of(d, "#tail-lines")
            no_alert(d, "live tail")
            shot(d, "live-tail")
            RESULT["tail"] = "seen"
        else:
            RESULT["tail"] = "GET /logs/tail is not in this build"
            log("SKIPPED the tail: GET /logs/tail answers 404 in this build")

        # 6. the browser said nothing about blocked content or errors
        # (the first requests, before the token was given, were rightly 401)
        errors = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"
                  and "favicon" not in e.get("message", "")
                  and "401 (Unauthorized)" not in e.get("message", "")]
        RESULT["console_errors"] = [e["message"] for e in errors]
        assert not errors, errors
        RESULT["ok"] = True
    finally:
        prod.stop.set()
        json.dump(RESULT, open(S["result"], "w"), indent=1)
        d.quit()


if __name__ == "__main__":
    main()
