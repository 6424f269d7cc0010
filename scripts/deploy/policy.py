"""Checks backup-cronjobs.yaml against what issue 8 asks of it, beyond the Kubernetes schema.

The schema says a manifest is well-formed; this says it is the deployment we promised: the
seed's schedules, Forbid concurrency, UTC, a non-root read-only container with resource
requests and limits, credentials from the Secret, the backup volume, a token-less
ServiceAccount, and every command a tool of ours. Prints one line per problem, exits 1 on any.

Usage: python policy.py backup-cronjobs.yaml Containerfile [toolbox-pod.yaml ...]
(Pods of the extra files get the same pod checks.)
"""

import re
import sys

import yaml

# CronJob name -> (schedule, the tool its container runs, RETENTION_DAYS or None).
EXPECTED = {
    "pipeline-backup-base": ("0 2 * * *", "pg-base-backup", "7"),
    "pipeline-backup-logical": ("0 3 * * *", "pg-logical-backup", "14"),
    "pipeline-backup-slots": ("0 4 * * *", "cdc-slot-tool", "14"),
    "pipeline-backup-kafka": ("0 1 * * 0", "kafka-topic-backup", "30"),
    "pipeline-backup-kafka-incremental": ("0 1 * * 1-6", "kafka-topic-backup", "30"),
    "pipeline-backup-validate": ("30 5 * * 1-6", "validate-backups", None),
    "pipeline-backup-validate-deep": ("30 5 * * 0", "validate-backups", None),
    "pipeline-backup-slot-status": ("*/5 * * * *", "cdc-slot-tool", None),
    "pipeline-backup-drill": ("0 6 1 1,4,7,10 *", "validate-backups", None),
}
SECRET = "pipeline-backup-credentials"
CONFIG = "pipeline-backup-config"
CLAIM = "pipeline-backup-data"
SERVICE_ACCOUNT = "pipeline-backup"
# Environment the tools read; the ConfigMap and Secret between them must provide these.
CONFIG_KEYS = {"PGHOST", "PGPORT", "PGDATABASE", "BACKUP_DIR", "KAFKA_BOOTSTRAP_SERVERS"}


def hour_of(schedule):
    """The hour field of a daily 'M H * * *' schedule, else None."""
    fields = schedule.split()
    return int(fields[1]) if len(fields) == 5 and fields[1].isdigit() else None


def check_pod(where, pod, tools, image_user, problems):
    sec = pod.get("securityContext", {})
    if sec.get("runAsNonRoot") is not True or not sec.get("runAsUser"):
        problems.append(f"{where}: pod must set runAsNonRoot and a non-zero runAsUser")
    elif image_user and (sec.get("runAsUser"), sec.get("runAsGroup")) != image_user:
        # PostgreSQL (pitr-restore --start, the deep checks) needs the uid in /etc/passwd,
        # which the image creates for its own user only.
        problems.append(f"{where}: runs as {sec.get('runAsUser')}:{sec.get('runAsGroup')}, "
                        f"the image's user is {image_user[0]}:{image_user[1]}")
    if sec.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: pod must use the RuntimeDefault seccomp profile")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{where}: pod must not mount a service account token")
    if pod.get("serviceAccountName") != SERVICE_ACCOUNT:
        problems.append(f"{where}: pod must run as the {SERVICE_ACCOUNT} ServiceAccount")
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in pod.get("volumes", [])
        if "persistentVolumeClaim" in v
    }
    if claims != {CLAIM}:
        problems.append(f"{where}: pod must mount the {CLAIM} volume, found {sorted(claims)}")
    for c in pod.get("initContainers", []) + pod.get("containers", []):
        name = f"{where}/{c['name']}"
        csec = c.get("securityContext", {})
        if csec.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem must be true")
        if csec.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        if csec.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{name}: must drop ALL capabilities")
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for what in ("cpu", "memory"):
                if what not in res.get(kind, {}):
                    problems.append(f"{name}: resources.{kind}.{what} missing")
        if c["image"].startswith("pipeline-backup:"):
            program = (c.get("command") or [""])[0]
            if program == "sh":
                # A small script: every tool it names must be ours.
                script = " ".join(c.get("args", []))
                named = set(re.findall(r"\b([a-z]+(?:-[a-z]+)+)\b", script)) & tools
                if not named:
                    problems.append(f"{name}: its script runs none of our tools")
            elif program not in tools and program != "mkdir":
                problems.append(f"{name}: runs {program!r}, which the image does not ship")


def main():
    manifest_path, containerfile_path = sys.argv[1], sys.argv[2]
    with open(manifest_path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    with open(containerfile_path) as f:
        containerfile = f.read()
    loop = re.search(r"for tool in ([^;]+);", containerfile)
    tools = set(loop.group(1).replace("\\", " ").split()) if loop else set()
    user = re.search(r"^USER (\d+):(\d+)$", containerfile, re.M)
    image_user = (int(user.group(1)), int(user.group(2))) if user else None
    problems = []
    if not image_user:
        problems.append("Containerfile: no numeric USER uid:gid")
    if not tools:
        problems.append("Containerfile: cannot find the list of tool binaries it copies")
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
        if "namespace" in d["metadata"]:
            problems.append(f"{d['metadata']['name']}: no namespace (kubectl apply -n chooses)")
    if "Secret" in by_kind:
        problems.append("a Secret must not be in the manifest (applying would overwrite it)")
    sa = by_kind.get("ServiceAccount", {}).get(SERVICE_ACCOUNT)
    if not sa or sa.get("automountServiceAccountToken") is not False:
        problems.append(f"ServiceAccount {SERVICE_ACCOUNT} missing or mounting its token")
    if by_kind.get("Role") or by_kind.get("ClusterRole"):
        problems.append("no Role: the tools never call the Kubernetes API")
    pvc = by_kind.get("PersistentVolumeClaim", {}).get(CLAIM)
    if not pvc or pvc["spec"]["resources"]["requests"]["storage"] != "50Gi":
        problems.append(f"PersistentVolumeClaim {CLAIM} of 50Gi missing")
    config = by_kind.get("ConfigMap", {}).get(CONFIG, {}).get("data", {})
    missing = CONFIG_KEYS - set(config)
    if missing:
        problems.append(f"ConfigMap {CONFIG} lacks {sorted(missing)}")

    cronjobs = by_kind.get("CronJob", {})
    if set(cronjobs) != set(EXPECTED):
        problems.append(
            f"CronJobs {sorted(cronjobs)} differ from the expected {sorted(EXPECTED)}"
        )
    for name, (schedule, tool, retention) in EXPECTED.items():
        cj = cronjobs.get(name)
        if not cj:
            continue
        spec = cj["spec"]
        if spec.get("schedule") != schedule:
            problems.append(f"{name}: schedule {spec.get('schedule')!r}, expected {schedule!r}")
        if spec.get("timeZone") != "Etc/UTC":
            problems.append(f"{name}: timeZone must be Etc/UTC")
        if spec.get("concurrencyPolicy") != "Forbid":
            problems.append(f"{name}: concurrencyPolicy must be Forbid")
        pod = spec["jobTemplate"]["spec"]["template"]["spec"]
        if pod.get("restartPolicy") != "Never":
            problems.append(f"{name}: restartPolicy must be Never (the Job retries)")
        check_pod(name, pod, tools, image_user, problems)
        container = pod["containers"][0]
        argv = container.get("command", []) + container.get("args", [])
        if tool not in " ".join(argv):
            problems.append(f"{name}: does not run {tool}")
        sources = {
            (k, v.get("name"))
            for e in container.get("envFrom", [])
            for k, v in e.items()
        }
        if ("secretRef", SECRET) not in sources or ("configMapRef", CONFIG) not in sources:
            problems.append(f"{name}: must take its environment from {CONFIG} and {SECRET}")
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if env.get("RETENTION_DAYS") != retention:
            problems.append(
                f"{name}: RETENTION_DAYS {env.get('RETENTION_DAYS')}, expected {retention}"
            )

    # Validation runs after every daily backup has started (and had an hour).
    daily = [hour_of(s) for n, (s, _, _) in EXPECTED.items() if not re.search("validate|drill", n)]
    validate = hour_of(EXPECTED["pipeline-backup-validate"][0])
    if max(h for h in daily if h is not None) >= validate:
        problems.append("validation must be scheduled after the daily backups")

    for name, dep in by_kind.get("Deployment", {}).items():
        check_pod(name, dep["spec"]["template"]["spec"], tools, image_user, problems)
    if not by_kind.get("NetworkPolicy"):
        problems.append("no NetworkPolicy limiting ingress to the backup pods")

    pods = 0
    for extra in sys.argv[3:]:
        with open(extra) as f:
            for d in yaml.safe_load_all(f):
                if d and d["kind"] == "Pod":
                    pods += 1
                    check_pod(d["metadata"]["name"], d["spec"], tools | {"sleep"}, image_user,
                              problems)

    for p in problems:
        print(f"policy: {p}")
    if not problems:
        print(f"policy: {len(docs)} resources, {len(cronjobs)} CronJobs, {pods} extra pods "
              "as expected")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
