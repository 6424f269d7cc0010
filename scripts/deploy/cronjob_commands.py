"""Writes each CronJob's command line from backup-cronjobs.yaml so check.sh can run exactly it.

For every CronJob, OUT_DIR/<name>.argv holds the container's command and args, and
OUT_DIR/<name>.env its `env` entries as KEY=VALUE (both NUL-separated, for bash's
`mapfile -d ''`). Kubernetes' $(VAR) references are expanded as the kubelet would, from the
container's env, then this process's environment, then the ConfigMap. Paths of the pod's volumes
are moved under ROOT: /backups -> ROOT/backups, /scratch -> ROOT/scratch.

Usage: python cronjob_commands.py backup-cronjobs.yaml OUT_DIR ROOT
"""

import os
import re
import sys

import yaml

MOUNTS = ("/backups", "/scratch")


def main():
    manifest, out_dir, root = sys.argv[1:4]
    with open(manifest) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    config = {}
    for d in docs:
        if d["kind"] == "ConfigMap":
            config.update(d.get("data", {}))
    os.makedirs(out_dir, exist_ok=True)
    for d in docs:
        if d["kind"] != "CronJob":
            continue
        container = d["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}
        lookup = {**config, **os.environ, **env}

        def expand(text):
            text = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                          lambda m: lookup.get(m.group(1), m.group(0)), text)
            for mount in MOUNTS:
                text = re.sub(rf"(?<![\w/]){re.escape(mount)}(?=/|\b|$)", root + mount, text)
            return text

        argv = [expand(a) for a in container.get("command", []) + container.get("args", [])]
        name = d["metadata"]["name"]
        with open(os.path.join(out_dir, f"{name}.argv"), "wb") as f:
            f.write(b"".join(a.encode() + b"\0" for a in argv))
        with open(os.path.join(out_dir, f"{name}.env"), "wb") as f:
            f.write(b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items()))


if __name__ == "__main__":
    main()
