"""``xenvcpu top``: one frame as text (--once), samples as JSON lines (--json), and the live
view driven as a person drives it, in a real terminal (tmux: send-keys, capture-pane).

Every run uses a simulated host whose clock is frozen and moves exactly 2 s before each
snapshot but the first (tests/frozen_clock.py), so the screen is the same on every run: a
running vCPU shows 90.0%, a runnable one 15.0%, a blocked one 2.0% (docs/simulator.md).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import frozen_clock
import pytest

import xenvcpu
from xenvcpu import cli
from xenvcpu.cli.topview import View, frame
from xenvcpu.metrics import Sampler

HERE = Path(__file__).resolve().parent
DEFAULT = "sim:///default"


@pytest.fixture
def frozen() -> Iterator[None]:
    frozen_clock.install(2.0)
    yield
    frozen_clock.uninstall()


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.URI_ENV, raising=False)
    monkeypatch.setenv("COLUMNS", "120")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# The frame of the default host after one 2-second interval, top to bottom.
ONCE = """\
xenvcpu top - sim:///default - Xen 4.17 - 64 pCPUs, 2 NUMA nodes - interval 2.00 s
4 domains, 26/32 vCPUs online: 6 running, 6 runnable, 14 blocked; load 6.58 of 64 pCPUs
node 0  pCPUs 0-31  load 3.31  vCPUs 14  busiest: pCPU 3 (94%, 3 vCPUs)
  load  9119............009100..........
  vCPUs 1133............111111..........
node 1  pCPUs 32-63  load 3.27  vCPUs 12  busiest: pCPU 49 (90%, 1 vCPU)
  load  ................091009100910....
  vCPUs ................111111111111....
pCPU load 0-9 = 0-90%, # = 100%+, ? = not measured yet; vCPUs on it 1-9, + = 10+; . = none
sort: util v  filter: -
  NAME                        ID   VCPU STATE  PCPU   UTIL%    TIME(s)  HARD / SOFT
 - batch                      3  12/16               327.0      583.2
                                      1   r--    49    90.0       18.8  all / all
                                      5   r--    53    90.0       34.8  all / all
                                      9   r--    57    90.0       50.8  all / all
                                      2   ---    50    15.0       13.8  all / all
                                      6   ---    54    15.0       29.8  all / all
                                     10   ---    58    15.0       45.8  all / all
                                      0   -b-    48     2.0        4.2  all / all
                                      3   -b-    51     2.0       16.2  all / all
                                      4   -b-    52     2.0       20.2  all / all
                                      7   -b-    55     2.0       32.2  all / all
                                      8   -b-    56     2.0       36.2  all / all
                                     11   -b-    59     2.0       48.2  all / all
                                     12   --p     -     0.0       52.0  all / all
                                     13   --p     -     0.0       56.0  all / all
                                     14   --p     -     0.0       60.0  all / all
                                     15   --p     -     0.0       64.0  all / all
 - db                         2    6/8               113.0      121.6
                                      2   r--    18    90.0       19.8  16-31 / all
                                      3   ---    19    15.0       13.8  16-31 / all
                                      0   -b-    16     2.0        3.2  16-31 / all
                                      1   -b-    17     2.0        6.2  16-31 / all
                                      4   -b-    20     2.0       15.2  16-31 / all
                                      5   -b-    21     2.0       18.2  16-31 / all
                                      6   --p     -     0.0       21.0  16-31 / all
                                      7   --p     -     0.0       24.0  16-31 / all
 - Domain-0                   0    4/4               109.0       23.1
                                      0   r--     0    90.0       11.8  all / all
                                      1   ---     1    15.0        3.8  all / all
                                      2   -b-     2     2.0        3.2  all / all
                                      3   -b-     3     2.0        4.2  all / all
 - web                        1    4/4               109.0       33.1
                                      3   r--     3    90.0       18.8  all / 0-7
                                      0   ---     2    15.0        3.8  2 / 0-7
                                      1   -b-     3     2.0        4.2  3 / 0-7
                                      2   -b-     2     2.0        6.2  all / 0-7
"""


def test_once_prints_one_frame(capsys: pytest.CaptureFixture[str], frozen: None) -> None:
    rc, out, err = run(capsys, "--connect", DEFAULT, "top", "--once", "--interval", "0.01")
    assert (rc, err) == (0, "")
    assert out == ONCE


def test_once_on_a_scale_host_groups_pcpus(
    capsys: pytest.CaptureFixture[str], frozen: None
) -> None:
    rc, out, _ = run(
        capsys, "-c", "sim:///?cpus=4096&nodes=4&domains=50&vcpus=8", "top", "--once", "-d", "0.01"
    )
    lines = out.splitlines()
    assert rc == 0 and len(lines) == 2 + 3 * 4 + 3 + 51 + 404
    strips = [ln for ln in lines[:16] if ln.startswith("node ")]
    assert len(strips) == 4 and all("[one column: the busiest of 10 pCPUs]" in s for s in strips)
    assert all(len(ln) <= 120 for ln in lines)


def test_json_lines_one_per_sample(capsys: pytest.CaptureFixture[str], frozen: None) -> None:
    rc, out, _ = run(capsys, "-c", DEFAULT, "top", "--json", "-n", "2", "-d", "0.01")
    docs = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and len(docs) == 2
    doc = docs[1]
    assert set(doc) == {
        "schema", "command", "uri", "time_ns", "interval_s", "masked", "domains", "pcpus",
        "vanished",
    }  # fmt: skip
    assert (doc["schema"], doc["command"], doc["uri"]) == (1, "top", DEFAULT)
    assert (doc["interval_s"], doc["masked"], doc["vanished"]) == (2.0, False, [])
    web = next(d for d in doc["domains"] if d["name"] == "web")
    assert set(web) == {
        "name", "id", "uuid", "status", "previous_id", "error", "max_vcpus", "online_vcpus",
        "cpupool", "interval_s", "util", "vcpus",
    }  # fmt: skip
    assert web["status"] == "ok" and web["util"] == pytest.approx(1.09)
    assert web["vcpus"][0] == {
        "vcpu": 0,
        "state": "runnable",
        "cpu": 2,
        "util": 0.15,
        "cpu_time_ns": web["vcpus"][0]["cpu_time_ns"],
        "hard_affinity": "2",
        "soft_affinity": "0-7",
    }
    assert len(doc["pcpus"]) == 64 and doc["pcpus"][3] == {
        "cpu": 3,
        "node": 0,
        "load": 0.94,
        "vcpus": 3,
    }
    rc, out, _ = run(capsys, "-c", DEFAULT, "top", "--json", "--once", "-d", "0.01")
    assert rc == 0 and len(out.splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "needle", "code"),
    [
        (["top"], "needs a terminal: use --once", 1),
        (["top", "--once", "-d", "0"], "--interval 0.0", 2),
        (["top", "--json", "-n", "0"], "--iterations", 2),
    ],
)
def test_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str, code: int
) -> None:
    rc, out, err = run(capsys, "-c", DEFAULT, *argv)
    assert (rc, out) == (code, "")
    assert err.startswith("xenvcpu: error: ") and needle in err and err.count("\n") == 1


# ------------------------------------------------------------------------ tmux: a person


class Terminal:
    """A tmux server of our own with one 120x50 window running a command."""

    def __init__(self, tmp_path: Path, command: list[str], width: int = 120, height: int = 50):
        self.name = f"xenvcpu-top-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        conf = tmp_path / "tmux.conf"
        conf.write_text("set -g status off\n")
        # pytest loads readline, which puts LINES and COLUMNS in the environment: without
        # removing them curses would draw 80x24 whatever the window
        self.env = {k: v for k, v in os.environ.items() if k not in ("LINES", "COLUMNS", "TMUX")}
        shell = f"{shlex.join(command)}; echo __EXIT:$?; exec sleep 600"
        self.tmux(
            "-f", str(conf), "new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height),
            f"sh -c {shlex.quote(shell)}",
        )  # fmt: skip

    def tmux(self, *args: str) -> str:
        p = subprocess.run(
            ["tmux", "-L", self.name, *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=30,
            check=True,
        )
        return p.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def wait(self, pattern: str | Callable[[str], bool], timeout: float = 10.0) -> str:
        """The screen, once ``pattern`` (a regex, or a test of the screen) shows on it and
        the screen has settled (the same on two captures 0.1 s apart: curses may be midway
        through drawing a frame when tmux captures it)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if pattern(text) if callable(pattern) else re.search(pattern, text, re.M):
                time.sleep(0.1)
                if self.screen() == text:
                    return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not on the screen after {timeout} s:\n{text}")
            time.sleep(0.05)

    def close(self) -> None:
        subprocess.run(
            ["tmux", "-L", self.name, "kill-server"], capture_output=True, env=self.env, timeout=30
        )


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Any]:
    if shutil.which("tmux") is None:
        pytest.skip("needs tmux to drive top in a terminal (apt-get install tmux; make deps)")
    made: list[Terminal] = []

    def start(*argv: str, uri: str = DEFAULT) -> Terminal:
        cmd = [sys.executable, str(HERE / "frozen_clock.py"), "2", "-c", uri, *argv]
        t = Terminal(tmp_path, cmd)
        made.append(t)
        return t

    yield start
    for t in made:
        t.close()


def rows(screen: str) -> list[str]:
    """The domain rows on the screen: marker, expanded flag, name."""
    return [m.group(0).strip() for m in re.finditer(r"^[> ][-+] \S+", screen, re.M)]


def test_live_view_as_a_person_uses_it(terminal: Any) -> None:
    term = terminal("top", "--interval", "0.3")
    # the first refresh replaces the reference sample: the window fits every vCPU, so
    # every domain is expanded; the busiest domain comes first
    screen = term.wait(r"interval 2\.00 s, refresh 0\.3 s")
    lines = screen.splitlines()
    assert lines[0].startswith("xenvcpu top - sim:///default - Xen 4.17 - 64 pCPUs, 2 NUMA")
    assert lines[3] == "  load  9119............009100.........."  # Dom0 and web share 2-3
    assert lines[4] == "  vCPUs 1133............111111.........."
    assert rows(screen) == ["- batch", "- db", ">- Domain-0", "- web"]
    assert "  1   r--    49    90.0" in screen and "  0   ---     2    15.0" in screen
    assert lines[-1].startswith("q quit  u/n/i/p/t sort")

    term.keys("n")  # sort by name
    screen = term.wait(r"sort: name \^")
    assert rows(screen) == [">- Domain-0", "- batch", "- db", "- web"]
    term.keys("n")  # again: reversed
    assert rows(term.wait(r"sort: name v")) == ["- web", "- db", "- batch", ">- Domain-0"]

    term.keys("-")  # collapse every domain
    screen = term.wait(r"^ \+ web")
    assert rows(screen) == ["+ web", "+ db", "+ batch", ">+ Domain-0"]
    assert " r-- " not in screen

    term.keys("Up", "Enter")  # select batch (the row above), expand it
    screen = term.wait(r"^>- batch")
    assert rows(screen) == ["+ web", "+ db", ">- batch", "+ Domain-0"]
    assert screen.count(" all / all") == 16  # batch's vCPUs only

    term.keys("/", "d", "b", "Enter")  # filter: db
    screen = term.wait(r"filter: db")
    assert rows(screen) == [">+ db"]
    term.keys("Enter")
    screen = term.wait(r"16-31 / all")
    assert screen.count("16-31 / all") == 8 and rows(screen) == [">- db"]

    term.keys("/", "Enter", "u")  # clear the filter, back to utilisation
    screen = term.wait(r"sort: util v  filter: -")
    assert rows(screen) == ["- batch", ">- db", "+ Domain-0", "+ web"]

    term.keys("q")
    term.wait(r"^__EXIT:0$")


def test_live_view_of_a_host_that_does_not_fit_scrolls_to_the_selection(terminal: Any) -> None:
    # 31 domains of 4 vCPUs cannot all be expanded in 50 rows: they start collapsed
    term = terminal("top", "-d", "0.3", uri="sim:///?cpus=64&nodes=2&domains=30&vcpus=4")
    screen = term.wait(r"interval 2\.00 s")
    assert len(rows(screen)) == 31 and " r-- " not in screen
    # every guest's vCPU n starts on pCPU n: they pile up on pCPUs 0-3
    assert "busiest: pCPU 0 (870%, 31 vCPUs)" in screen and "  load  ####....." in screen
    term.keys(*["Down"] * 40)  # to the last domain: the view scrolls with it
    screen = term.wait(lambda s: rows(s)[-1].startswith(">+ "))
    assert len(rows(screen)) == 31
    term.keys("+")  # expand every domain: more rows than the window
    screen = term.wait(r"^\d+ more rows \(pgdn\)  q quit")
    assert ">- " in screen  # the selection stays on the screen
    term.keys("q")
    term.wait(r"^__EXIT:0$")


def test_ctrl_c_ends_the_json_stream_cleanly(tmp_path: Path) -> None:
    """Ctrl-C is how an endless --json stream is stopped: exit 0, whole lines only."""
    env = {k: v for k, v in os.environ.items() if k != cli.URI_ENV}
    argv = [sys.executable, str(HERE / "frozen_clock.py"), "2", "-c", DEFAULT, "top", "--json"]
    with subprocess.Popen(
        [*argv, "-d", "0.05"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    ) as p:
        stdout = p.stdout
        assert stdout is not None
        try:
            box: list[bytes] = []
            reader = threading.Thread(target=lambda: box.append(stdout.readline()), daemon=True)
            reader.start()
            reader.join(30)  # bounded: a silent top fails the test, never hangs it
            assert box and box[0].endswith(b"\n"), "no JSON line within 30 s"
            p.send_signal(signal.SIGINT)
            rest, err = p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(30)
        first = box[0]
    assert p.returncode == 0 and err == b""
    docs = [json.loads(line) for line in (first + rest).splitlines()]
    assert docs and all(d["command"] == "top" for d in docs)


def test_names_are_shown_as_text_not_terminal_commands() -> None:
    """A name reaches the terminal with unprintable characters as '?', whatever the
    toolstack holds (the simulated host refuses control characters in its own names, so the
    sample's name is replaced here as a toolstack's would arrive)."""
    host = xenvcpu.connect(DEFAULT)
    sample = Sampler(host).sample()
    sample.domains[1].name = "evil\x1b[2J\x07name\nnext"
    text = "\n".join(ln.text for ln in frame(sample, View(), 120))
    assert "evil?[2J?name?next" in text
    assert "\x1b" not in text and "\x07" not in text
    assert all(ln.isprintable() for ln in text.splitlines())


def test_frame_shows_errors_returns_new_and_vanished_domains() -> None:
    host = xenvcpu.connect(DEFAULT)
    sim = host.sim
    assert sim is not None
    sim.freeze_clock()
    sampler = Sampler(host)
    sampler.sample()
    sim.advance(1.0)
    sim.fail_nth(18, "EIO")  # db's first vCPU read in the next snapshot
    text = "\n".join(ln.text for ln in frame(sampler.sample(), View(), 160))
    (db,) = [ln for ln in text.splitlines() if re.match(r"^ [-+] db ", ln)]
    assert "ERR" in db and "error: " in db and db.split()[5] == "-"  # utilisation unknown
    new = sim.restart_domain("web")  # back under a new domid
    sim.restart_domain("batch", uuid="00112233-4455-6677-8899-aabbccddeeff")  # a new guest
    sim.advance(1.0)
    lines = [ln.text for ln in frame(sampler.sample(), View(sort="name", reverse=False), 160)]
    (web,) = [ln for ln in lines if re.match(r"^ [-+] web ", ln)]
    assert f"{new:>5}" in web and " back " in web and "came back (was domain 1)" in web
    (batch,) = [ln for ln in lines if re.match(r"^ [-+] batch ", ln)]
    assert " new " in batch
    assert lines[-1] == "  gone since the last sample: batch (3)"
    none = frame(sampler.sample(), View(filter="nobody"), 160)
    assert none[-1].text == "  no domain matches the filter 'nobody'"
