"""Pulls what scripts/check-deploy.sh checks out of rendered Kubernetes manifests.

    k8s-extract.py MANIFESTS OUTDIR

writes, for every ConfigMap key ending in .toml, OUTDIR/<configmap>.<key> (a driftscope
config) and OUTDIR/<configmap>.<key>.env (one NAME=VALUE a line: the environment its
${ENV} references see in the pod: literal values as they are, values from Secrets or the
downward API as placeholders), and for every PrometheusRule OUTDIR/<name>.rules.yml
(its spec, a Prometheus rule file). Prints what it wrote.
"""

import os
import sys

import yaml

PLACEHOLDER = "placeholder-from-kubernetes"


def containers(doc):
    spec = doc.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    return (pod.get("containers") or []) + (pod.get("initContainers") or [])


def env_of(container):
    out = {}
    for var in container.get("env") or []:
        out[var["name"]] = str(var["value"]) if "value" in var else PLACEHOLDER
    return out


def main(manifests, outdir):
    with open(manifests) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    # The environment of each container that mounts a ConfigMap, by ConfigMap name.
    env_by_configmap = {}
    for doc in docs:
        spec = (doc.get("spec") or {}).get("template", {}).get("spec") or {}
        volumes = {v["name"]: v["configMap"]["name"] for v in spec.get("volumes") or [] if "configMap" in v}
        for c in containers(doc):
            for mount in c.get("volumeMounts") or []:
                if mount["name"] in volumes:
                    env_by_configmap.setdefault(volumes[mount["name"]], {}).update(env_of(c))
    written = 0
    for doc in docs:
        name = doc["metadata"]["name"]
        if doc["kind"] == "ConfigMap":
            for key, text in (doc.get("data") or {}).items():
                if not key.endswith(".toml"):
                    continue
                path = os.path.join(outdir, f"{name}.{key}")
                with open(path, "w") as f:
                    f.write(text)
                with open(path + ".env", "w") as f:
                    for var, value in sorted(env_by_configmap.get(name, {}).items()):
                        f.write(f"{var}={value}\n")
                print(path)
                written += 1
        elif doc["kind"] == "PrometheusRule":
            path = os.path.join(outdir, f"{name}.rules.yml")
            with open(path, "w") as f:
                yaml.safe_dump(doc["spec"], f, sort_keys=False)
            print(path)
            written += 1
    if written == 0:
        sys.exit(f"{manifests}: no driftscope config and no PrometheusRule found")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
