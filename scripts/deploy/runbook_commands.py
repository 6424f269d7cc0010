"""Runs every command of our tools in docs/runbook.md's shell blocks with `--help` appended, so
a renamed flag, a removed subcommand or a badly formed value fails check.sh before an operator
meets it. clap rejects unknown flags and unparsable values before it honours `--help`.

Prints one line per command: exit code, a tab, the command (as written), a tab, the first line
of its error output.

Usage: python runbook_commands.py RUNBOOK BIN_DIR WRAPPER_DIR
"""

import os
import re
import shlex
import subprocess
import sys

TOOLS = {
    "pg-base-backup", "wal-archive", "pitr-restore", "pg-logical-backup",
    "kafka-topic-backup", "kafka-replay", "cdc-slot-tool", "validate-backups",
}


def commands(text):
    """The tool command lines of the ```sh blocks, continuation lines joined."""
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if not line:
                continue
            words = shlex.split(line, comments=True)
            if words and (words[0] in TOOLS or words[0].endswith(".sh")):
                yield line, words


def main():
    runbook, bin_dir, wrapper_dir = sys.argv[1:4]
    with open(runbook) as f:
        text = f.read()
    env = dict(os.environ, PATH=f"{wrapper_dir}:{bin_dir}:/usr/bin:/bin")
    found = 0
    for line, words in commands(text):
        found += 1
        result = subprocess.run(words + ["--help"], env=env, capture_output=True, text=True,
                                timeout=60)
        error = (result.stderr.strip().splitlines() or [""])[0]
        print(f"{result.returncode}\t{line}\t{error}")
    if found == 0:
        print(f"1\t(none)\tno tool command found in {runbook}")


if __name__ == "__main__":
    main()
