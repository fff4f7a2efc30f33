#!/usr/bin/env python3
"""check_chart.py: offline checks of deploy/helm/tenant-provisioner. helm lint, helm template,
the rendered manifests against the Kubernetes schemas bundled in kubernetes-validate (no
cluster), and the chart's promises asserted on the rendered YAML: worker replicas never above the
requests topic's partitions (schema and template both refuse), probe paths and ports, non-root
read-only pods, grace periods above the drain budgets, the migration hook, secrets as files, and
deploy/Dockerfile + deploy/docker-compose.yml agreeing with it. Run by scripts/test with the venv's
python: deploy/helm/check_chart.py HELM_BIN. Prints "N passed, M failed"; exits 1 on a failure."""
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "tenant-provisioner"
KUBE_VERSION = "1.30.0"
# Values an operator must give: the secrets (or existing Secret names).
BASE = ["--set", "secrets.jwt.key=dev-secret-0123456789abcdef0123456789",
        "--set", "secrets.receipts.signingKey=signing-key", "--set", "secrets.receipts.keyset=keyset"]

HELM = sys.argv[1] if len(sys.argv) > 1 else "helm"
passed, failed = 0, []


def check(name, cond, detail=""):
    global passed
    if cond:
        passed += 1
    else:
        failed.append(f"{name}: {detail}")
        print(f"FAIL {name}: {detail}")


def helm(*args):
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120)


def render(*extra, skip_schema=False):
    args = ["template", "tp", str(CHART), "--kube-version", KUBE_VERSION, *BASE, *extra]
    if skip_schema:
        args.append("--skip-schema-validation")
    return helm(*args)


def docs_of(text):
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(docs, kind, name_suffix=None):
    return [d for d in docs if d["kind"] == kind and
            (name_suffix is None or d["metadata"]["name"].endswith(name_suffix))]


def config_keys():
    """The keys of the config table (worker/common/config.c)."""
    src = (ROOT / "worker" / "common" / "config.c").read_text()
    return set(re.findall(r'\{"([a-z_.]+)", KT_', src))


def pod_spec(doc):
    return doc["spec"]["template"]["spec"]


def container(doc):
    return pod_spec(doc)["containers"][0]


def tp_conf(docs):
    cm = by_kind(docs, "ConfigMap")[0]
    out = {}
    for line in cm["data"]["tp.conf"].splitlines():
        if line.strip() and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


# ---- lint, template, Kubernetes schemas ------------------------------------------------------
r = helm("lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION, *BASE)
print(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr)
check("helm lint --strict", r.returncode == 0, r.stdout + r.stderr)

variants = {
    "defaults": [],
    "keda+ingress": ["--set", "worker.keda.enabled=true", "--set", "ingress.ingress.enabled=true",
                     "--set", "ingress.hpa.enabled=false",
                     "--set", "pgDsnSecret.name=tp-postgres", "--set", "pgDsnSecret.key=dsn"],
}
rendered = {}
for name, extra in variants.items():
    r = render(*extra)
    check(f"helm template ({name})", r.returncode == 0, r.stderr)
    rendered[name] = docs_of(r.stdout) if r.returncode == 0 else []

for name, docs in rendered.items():
    for d in docs:
        if d["kind"] == "ScaledObject":
            continue  # a KEDA CRD: no bundled schema; its fields are asserted below
        try:
            kubernetes_validate.validate(d, KUBE_VERSION, strict=True)
            ok, why = True, ""
        except kubernetes_validate.ValidationError as e:
            ok, why = False, str(e)
        check(f"kubernetes schema {KUBE_VERSION} strict ({name}) {d['kind']}/{d['metadata']['name']}",
              ok, why)

docs = rendered["defaults"]
keda_docs = rendered["keda+ingress"]
kinds = sorted({d["kind"] for d in docs})
print("rendered kinds:", ", ".join(kinds))
for kind in ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Job", "PodDisruptionBudget",
             "Secret", "Service"]:
    check(f"renders a {kind}", kind in kinds, kinds)

ingress = by_kind(docs, "Deployment", "-ingress")[0]
worker = by_kind(docs, "Deployment", "-worker")[0]
job = by_kind(docs, "Job", "-migrate")[0]
conf = tp_conf(docs)

# ---- replicas never above the requests topic's partitions ------------------------------------
check("worker replicas <= partitions by default", worker["spec"]["replicas"] <= 6)
for args, what in [(["--set", "worker.replicas=7"], "replicas 7 > 6 partitions"),
                   (["--set", "worker.replicas=3", "--set", "kafka.requestsPartitions=2"], "replicas 3 > 2"),
                   (["--set", "worker.keda.enabled=true", "--set", "worker.keda.maxReplicas=9"],
                    "KEDA max 9 > 6")]:
    r = render(*args)
    check(f"schema refuses {what}", r.returncode != 0 and "values don't meet the specifications" in r.stderr,
          r.stderr)
    r = render(*args, skip_schema=True)
    check(f"template fail refuses {what}", r.returncode != 0 and "exceeds kafka.requestsPartitions" in r.stderr,
          r.stderr)
r = render("--set", "worker.replicas=8", "--set", "kafka.requestsPartitions=8")
check("replicas == partitions renders", r.returncode == 0, r.stderr)

so = by_kind(keda_docs, "ScaledObject")
check("KEDA ScaledObject rendered when enabled", len(so) == 1)
if so:
    spec = so[0]["spec"]
    trig = spec["triggers"][0]
    check("KEDA: kafka lag trigger on the requests topic and the worker group",
          trig["type"] == "kafka" and trig["metadata"]["topic"] == conf["topic.requests"]
          and trig["metadata"]["consumerGroup"] == conf["worker.group_id"], trig)
    check("KEDA: maxReplicaCount <= partitions", spec["maxReplicaCount"] <= 6, spec)
    check("KEDA: scales the worker Deployment", spec["scaleTargetRef"]["name"] == worker["metadata"]["name"])
    kw = by_kind(keda_docs, "Deployment", "-worker")[0]
    check("KEDA: the Deployment leaves replicas to KEDA", "replicas" not in kw["spec"])
check("worker rollout never surges past the partitions",
      worker["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0)

# ---- probes, ports, Prometheus ----------------------------------------------------------------
def probe(c, kind):
    p = c[kind]["httpGet"]
    port = p["port"]
    if isinstance(port, str):
        port = next(x["containerPort"] for x in c["ports"] if x["name"] == port)
    return p["path"], port


ic, wc = container(ingress), container(worker)
check("ingress liveness GET /healthz :8080", probe(ic, "livenessProbe") == ("/healthz", 8080), probe(ic, "livenessProbe"))
check("ingress readiness GET /readyz :8080", probe(ic, "readinessProbe") == ("/readyz", 8080), probe(ic, "readinessProbe"))
check("ingress startup GET /healthz", probe(ic, "startupProbe")[0] == "/healthz")
check("worker liveness GET /healthz :9464", probe(wc, "livenessProbe") == ("/healthz", 9464), probe(wc, "livenessProbe"))
check("worker readiness GET /readyz :9464", probe(wc, "readinessProbe") == ("/readyz", 9464), probe(wc, "readinessProbe"))
check("ingress listens on all addresses at its port",
      conf.get("ingress.listen_host") == "0.0.0.0" and conf.get("ingress.listen_port") == "8080", conf)
check("worker.http_listen is 0.0.0.0:9464", conf.get("worker.http_listen") == "0.0.0.0:9464", conf)
for d, port in [(ingress, "8080"), (worker, "9464")]:
    ann = d["spec"]["template"]["metadata"]["annotations"]
    check(f"{d['metadata']['name']}: Prometheus annotations",
          ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == port
          and ann.get("prometheus.io/path") == "/metrics", ann)
svc = by_kind(docs, "Service", "-ingress")[0]
check("ingress Service targets the http port", svc["spec"]["ports"][0]["targetPort"] == "http")

# ---- security, resources ----------------------------------------------------------------------
for d in [ingress, worker, job]:
    name = d["metadata"]["name"]
    ps, c = pod_spec(d), container(d)
    check(f"{name}: non-root pod", ps["securityContext"].get("runAsNonRoot") is True
          and ps["securityContext"].get("runAsUser", 0) > 0, ps["securityContext"])
    sc = c["securityContext"]
    check(f"{name}: read-only root filesystem, no privilege escalation, no capabilities",
          sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
          and sc.get("capabilities", {}).get("drop") == ["ALL"], sc)
    res = c.get("resources", {})
    check(f"{name}: resource requests and limits",
          all(k in res.get(p, {}) for p in ("requests", "limits") for k in ("cpu", "memory")), res)
    check(f"{name}: no service account token", ps.get("automountServiceAccountToken") is False)
wres = wc["resources"]
check("worker memory limit above the measured 43 MB peak RSS",
      wres["limits"]["memory"].endswith("Mi") and int(wres["limits"]["memory"][:-2]) >= 86, wres)

# ---- grace periods ----------------------------------------------------------------------------
grace_ms = int(conf["worker.shutdown_grace_ms"])
check("worker terminationGracePeriodSeconds > worker.shutdown_grace_ms",
      pod_spec(worker)["terminationGracePeriodSeconds"] * 1000 > grace_ms,
      (pod_spec(worker)["terminationGracePeriodSeconds"], grace_ms))
r = render("--set", "config.worker\\.shutdown_grace_ms=45500")
w2 = by_kind(docs_of(r.stdout), "Deployment", "-worker")[0] if r.returncode == 0 else None
check("the worker grace follows worker.shutdown_grace_ms (45500 ms -> > 45.5 s)",
      w2 is not None and pod_spec(w2)["terminationGracePeriodSeconds"] > 45.5, r.stderr)
check("ingress terminationGracePeriodSeconds > its drain (10 s) + pool wait (15 s)",
      pod_spec(ingress)["terminationGracePeriodSeconds"] > 25)
r = render("--set", "worker.terminationExtraSeconds=0")
check("a grace not above shutdown_grace_ms is refused", r.returncode != 0, r.stderr)

# ---- the migration hook -----------------------------------------------------------------------
ann = job["metadata"]["annotations"]
check("migration Job is a pre-install,pre-upgrade hook",
      set(ann.get("helm.sh/hook", "").split(",")) == {"pre-install", "pre-upgrade"}, ann)
check("migration Job runs tpctl migrate", container(job)["command"][-1] == "migrate"
      and container(job)["command"][0].endswith("tpctl"), container(job)["command"])
check("migration Job does not need the chart's ConfigMap (hooks run before it exists)",
      not any("configMap" in v for v in pod_spec(job).get("volumes", [])))
check("migration Job gets pg.dsn", any(e["name"] == "TP_PG_DSN" for e in container(job)["env"]))
kjob = by_kind(keda_docs, "Job", "-migrate")[0]
check("with pgDsnSecret the DSN comes from the Secret",
      container(kjob)["env"][0].get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "tp-postgres")

# ---- config and secrets -----------------------------------------------------------------------
known = config_keys()
unknown = [k for k in conf if k not in known and not k.startswith("kafka.")]
check("every rendered tp.conf key is a real config key", not unknown, unknown)
example = set(re.findall(r"^([a-z_.]+) =", (ROOT / "config" / "tp.conf.example").read_text(), re.M))
schema_cfg = yaml.safe_load((CHART / "values.schema.json").read_text())["properties"]["config"]
managed = {"ingress.listen_host", "ingress.listen_port", "worker.http_listen", "jwt.key_file",
           "receipts.signing_key_file", "receipts.keyset_file"}
missing = sorted(k for k in example if k not in schema_cfg["properties"] and k not in managed)
check("values.schema.json knows every key of config/tp.conf.example", not missing, missing)
r = render("--set", "config.no\\.such_key=1")
check("an unknown config key is refused by the schema", r.returncode != 0, r.stderr)
r = render("--set", "config.jwt\\.key_file=/x", skip_schema=True)
check("a chart-owned key set in values is refused", r.returncode != 0 and "set by the chart" in r.stderr, r.stderr)


def mounts(d):
    c = container(d)
    vols = {v["name"]: v for v in pod_spec(d)["volumes"]}
    return {m["mountPath"]: vols[m["name"]] for m in c["volumeMounts"]}


im, wm = mounts(ingress), mounts(worker)
jwt_dir = str(Path(conf["jwt.key_file"]).parent)
rc_dir = str(Path(conf["receipts.signing_key_file"]).parent)
check("JWT key mounted as a file from a Secret where jwt.key_file points",
      "secret" in im.get(jwt_dir, {}), (jwt_dir, list(im)))
for d in (ingress, worker):
    ps = pod_spec(d)
    for v in ps["volumes"]:
        if "secret" in v:
            mode = v["secret"].get("defaultMode", 0o644)
            # The kubelet gives the files to root:fsGroup; the process (runAsUser) reads them
            # through the group, so 0400 would lock it out.
            check(f"{d['metadata']['name']}: secret {v['name']} readable by the pod's group, not others",
                  ps["securityContext"].get("fsGroup") == ps["securityContext"]["runAsGroup"]
                  and mode & 0o040 and not mode & 0o007, oct(mode))
check("receipt signing key and keyset mounted from a Secret where the config points",
      "secret" in wm.get(rc_dir, {}) and str(Path(conf["receipts.keyset_file"]).parent) == rc_dir,
      (rc_dir, list(wm)))
secrets = {s["metadata"]["name"]: s for s in by_kind(docs, "Secret")}
check("Secrets carry jwt.key, receipts.key, receipts.keyset",
      any("jwt.key" in s["data"] for s in secrets.values())
      and any({"receipts.key", "receipts.keyset"} <= set(s["data"]) for s in secrets.values()))
cm_text = yaml.safe_dump(by_kind(docs, "ConfigMap")[0])
check("no secret material in the ConfigMap", "dev-secret-0123456789" not in cm_text)
for d in (ingress, worker):
    envs = container(d).get("env", [])
    check(f"{d['metadata']['name']}: no key material in env", not any("KEY" in e["name"] for e in envs), envs)
r = render("--set", "secrets.jwt.key=", skip_schema=True)
check("a release without a JWT key is refused", r.returncode != 0 and "secrets.jwt" in r.stderr, r.stderr)
r = render("--set", "secrets.jwt.key=", "--set", "secrets.jwt.existingSecret=my-jwt")
check("an existing JWT Secret is used and not created", r.returncode == 0 and
      "my-jwt" in r.stdout and not any(s["metadata"]["name"] == "my-jwt"
                                       for s in by_kind(docs_of(r.stdout), "Secret")), r.stderr)

# ---- PDBs, HPA, Ingress -----------------------------------------------------------------------
pdbs = by_kind(docs, "PodDisruptionBudget")
check("a PodDisruptionBudget for each Deployment",
      {p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] for p in pdbs} == {"ingress", "worker"})
hpa = by_kind(docs, "HorizontalPodAutoscaler")[0]
check("HPA scales tp-ingress on CPU", hpa["spec"]["scaleTargetRef"]["name"] == ingress["metadata"]["name"]
      and hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu")
r = render("--set", "ingress.hpa.enabled=false", "--set", "ingress.replicas=1")
check("an ingress PDB that would block every drain is refused",
      r.returncode != 0 and "ingress.pdb.minAvailable" in r.stderr, r.stderr)
r = render("--set", "ingress.hpa.enabled=false", "--set", "ingress.replicas=3")
check("3 ingress replicas without HPA render with their PDB", r.returncode == 0 and
      by_kind(docs_of(r.stdout), "Deployment", "-ingress")[0]["spec"]["replicas"] == 3, r.stderr)
check("no Ingress by default", not by_kind(docs, "Ingress"))
ing = by_kind(keda_docs, "Ingress")
check("Ingress when enabled, API paths only",
      len(ing) == 1 and {p["path"] for p in ing[0]["spec"]["rules"][0]["http"]["paths"]} == {"/api/", "/openapi.yaml"})

# ---- deploy/Dockerfile and deploy/docker-compose.yml agree ----------------------------------------
dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
uid = pod_spec(ingress)["securityContext"]["runAsUser"]
check("Dockerfile USER is the chart's numeric runAsUser", re.search(rf"^USER {uid}(:{uid})?$", dockerfile, re.M),
      uid)
exposed = set(re.findall(r"^EXPOSE (.*)$", dockerfile, re.M)[0].split()) if "EXPOSE" in dockerfile else set()
check("Dockerfile EXPOSEs 8080 and 9464", {"8080", "9464"} <= exposed, exposed)
svcs = compose["services"]
env_keys = {}
for name in ("ingress", "worker", "migrate"):
    env = svcs.get(name, {}).get("environment", {})
    env_keys[name] = env
    for var in env:
        key = var[3:].lower()
        ok = any(k.replace(".", "_") == key for k in known) or key.startswith("kafka_")
        check(f"compose {name}: {var} overrides a real config key", ok)
check("compose ingress listens on 0.0.0.0:8080 and publishes 8080",
      env_keys["ingress"].get("TP_INGRESS_LISTEN_HOST") == "0.0.0.0"
      and str(env_keys["ingress"].get("TP_INGRESS_LISTEN_PORT", "8080")) == "8080"
      and any(str(p).endswith(":8080") for p in svcs["ingress"].get("ports", [])), svcs["ingress"])
check("compose worker listens on 0.0.0.0:9464",
      env_keys["worker"].get("TP_WORKER_HTTP_LISTEN") == "0.0.0.0:9464", env_keys["worker"])
for name, want in (("ingress", "http://127.0.0.1:8080/readyz"), ("worker", "http://127.0.0.1:9464/readyz")):
    hc = " ".join(svcs[name].get("healthcheck", {}).get("test", []))
    check(f"compose {name} healthcheck probes {want}", want in hc, hc)
check("compose runs tpctl migrate before the services",
      "tpctl" in " ".join(svcs.get("migrate", {}).get("entrypoint", []))
      and all(svcs[n]["depends_on"].get("migrate", {}).get("condition") == "service_completed_successfully"
              for n in ("ingress", "worker")), svcs.get("migrate"))
check("compose mounts the keys as files (secrets)",
      "jwt.secret" in str(svcs["ingress"].get("secrets")) and "receipts.key" in str(svcs["worker"].get("secrets")))
check("compose services run read-only", all(svcs[n].get("read_only") is True for n in ("ingress", "worker", "migrate")))

print(f"chart: {passed} passed, {len(failed)} failed")
sys.exit(1 if failed else 0)
