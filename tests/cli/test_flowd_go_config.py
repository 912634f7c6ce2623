#!/usr/bin/env python3
"""flowmarkd -c flowd-go's conf.yaml: `--check` and `--check --print` end to end.

    python3 tests/cli/test_flowd_go_config.py BUILD_DIR SOURCE_DIR [CHECKED ...]

- Each CHECKED fixture (tests/data/flowd_go/NAME.yaml, those whose translation uses keys
  this build has) passes `--check` (exit 0), and `--check --print` prints its expected
  translation (NAME.toml) after the summary comments.
- A file without the .yaml name is recognised by its content.
- Unknown keys, wrong types, bad values and refused keys exit 78 (flowmarkd's configuration
  error, as for TOML and flowd's files), the message naming the file, line, column and the
  key's path.
"""

import os
import subprocess
import sys
import tempfile
import unittest

if len(sys.argv) < 3:
    sys.exit("usage: test_flowd_go_config.py BUILD_DIR SOURCE_DIR [CHECKED ...]")
FLOWMARKD = os.path.join(os.path.abspath(sys.argv[1]), "flowmarkd")
DATA = os.path.join(os.path.abspath(sys.argv[2]), "tests", "data", "flowd_go")
CHECKED = sys.argv[3:]
del sys.argv[1:]

EXIT_CONFIG = 78


def run(*args):
    return subprocess.run([FLOWMARKD, *args], capture_output=True, text=True, timeout=20)


class TestCheck(unittest.TestCase):
    def test_fixtures_pass_check_and_print_their_translation(self):
        self.assertTrue(CHECKED, "no fixture to check")
        for name in CHECKED:
            path = os.path.join(DATA, name + ".yaml")
            r = run("--check", "-c", path)
            self.assertEqual(r.returncode, 0, f"{name}: {r.stderr}")
            r = run("--check", "--print", "-c", path)
            self.assertEqual(r.returncode, 0, f"{name}: {r.stderr}")
            with open(os.path.join(DATA, name + ".toml")) as f:
                expected = f.read().replace("@FILE@", path)
            # The summary as comments, a blank line, then the translation as it is.
            head, sep, toml = r.stdout.partition("\n\n# flowmarkd configuration translated")
            self.assertTrue(sep, r.stdout)
            self.assertTrue(all(l.startswith("#") for l in head.splitlines()), head)
            self.assertEqual("# flowmarkd configuration translated" + toml, expected)
            print(f"  [{name}.yaml: --check passed, translation as expected]", file=sys.stderr)

    def test_detected_by_content_without_the_yaml_name(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "flowd-go.conf")
            with open(os.path.join(DATA, "pipe_collector.yaml")) as f, open(path, "w") as out:
                out.write(f.read())
            r = run("--check", "--print", "-c", path)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn(f"translated from flowd-go's {path}", r.stdout)


class TestErrors(unittest.TestCase):
    CASES = [
        # (yaml, what the message must contain)
        ("plugins:\n  namedPipe: {}\nbackends:\n  firefly:\n    stun:\n"
         "      httpResolution: true\n",
         "conf.yaml:6:7: backends.firefly.stun.httpResolution: unknown key"),
        ("plugins:\n  namedpipe: {}\n", "conf.yaml:2:3: plugins.namedpipe: unknown key"),
        ("plugins:\n  api:\n    bindPort: seven\n",
         "conf.yaml:3:15: plugins.api.bindPort: 'seven' is not an integer"),
        ("plugins:\n  namedPipe:\n    pipePath: [a, b]\n",
         "conf.yaml:3:15: plugins.namedPipe.pipePath: expected a string"),
        ("backends:\n  marker:\n    markingStrategy: sideways\n",
         "conf.yaml:3:22: backends.marker.markingStrategy: 'sideways' is not one of"),
        ("plugins:\n  namedPipe: {}\nbackends:\n  marker:\n    matchAll: true\n",
         "conf.yaml:5:15: backends.marker.matchAll: true without plugins.perfsonar"),
        ("enrichers:\n  skops:\n    strategy: transition\n",
         "conf.yaml:3:15: enrichers.skops.strategy: 'transition'"),
        ("plugins:\n  api: {\n", "conf.yaml:"),  # not YAML
    ]

    def test_exit_78_naming_the_key_path(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "conf.yaml")
            for text, want in self.CASES:
                with open(path, "w") as f:
                    f.write(text)
                for args in (["--check"], []):  # checked, and run: refused the same way
                    r = run(*args, "-c", path)
                    self.assertEqual(r.returncode, EXIT_CONFIG, (text, r.stdout, r.stderr))
                    self.assertIn(want, r.stderr, text)
                    self.assertIn(d, r.stderr)  # the file's full path
        print(f"  [{len(self.CASES)} bad files: exit {EXIT_CONFIG}, key path named]",
              file=sys.stderr)

    def test_warnings_name_the_key_and_check_still_passes(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "conf.yaml")
            with open(path, "w") as f:
                f.write("pidPath: /run/flowd-go.pid\nplugins:\n  namedPipe:\n"
                        f"    pipePath: {d}/np\n    maxReaders: 9\nbackends:\n  firefly: {{}}\n")
            r = run("--check", "-c", path)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("conf.yaml:1:10: pidPath: not written", r.stderr)
            self.assertIn("conf.yaml:5:17: plugins.namedPipe.maxReaders: not used", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
