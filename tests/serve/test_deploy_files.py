"""The files that deploy the service, checked for what they must hold (no Docker engine or
Kubernetes cluster here): manifests, Dockerfile, compose file, LICENSE and CITATION.cff."""

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"


def manifests() -> dict:
    docs = [d for p in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())]
    return {d["kind"]: d for d in docs}


def test_the_deployment_runs_the_service_with_probes_resources_and_a_read_only_run():
    deployment = manifests()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].startswith("speed-serve:")
    assert container["ports"] == [{"name": "http", "containerPort": 8000}]
    assert container["args"][:1] == ["/model"] and "--port" in container["args"]
    assert container["args"][container["args"].index("--port") + 1] == "8000"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    (mount,) = container["volumeMounts"]
    assert mount == {"name": "run", "mountPath": "/model", "readOnly": True}
    assert pod["volumes"][0]["persistentVolumeClaim"]["readOnly"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["terminationGracePeriodSeconds"] > 60  # the service's --graceful-timeout
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels


def test_the_service_and_autoscaler_point_at_the_deployment():
    kinds = manifests()
    deployment, service, hpa = (
        kinds["Deployment"],
        kinds["Service"],
        kinds["HorizontalPodAutoscaler"],
    )
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100


def dockerfile_lines() -> list[str]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def test_the_dockerfile_copies_files_that_exist_and_runs_a_real_module():
    lines = dockerfile_lines()
    copied = [p for line in lines if line.startswith("COPY ") for p in line.split()[1:-1]]
    assert copied and all((REPO / p).exists() for p in copied), copied
    (entry,) = [json.loads(line[len("ENTRYPOINT ") :]) for line in lines if "ENTRYPOINT" in line]
    assert entry[:2] == ["python", "-m"]
    assert importlib.util.find_spec(entry[2]) is not None
    assert entry[2] == "speed.serve"
    (user,) = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert user != "root"
    assert any(line.startswith("ARG BASE=") for line in lines)
    assert any(line.startswith("ARG TORCH_INDEX=") for line in lines)
    (cmd,) = [json.loads(line[len("CMD ") :]) for line in lines if line.startswith("CMD ")]
    from speed.serve.__main__ import parse_args

    assert parse_args(cmd).run_dir == "/model"


def test_the_compose_file_mounts_the_run_read_only_and_builds_this_folder():
    serve = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]["serve"]
    assert serve["build"]["context"] == "."
    assert any(v.endswith(":/model:ro") for v in serve["volumes"])
    assert serve["ports"] == ["8000:8000"]


def test_the_license_is_the_one_pyproject_names():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"]["text"] == "MIT"
    assert (REPO / "LICENSE").read_text().startswith("MIT License")


def test_citation_cff_has_the_fields_cff_1_2_requires():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert cff["message"] and cff["title"]
    assert cff["authors"] and all("name" in a or "family-names" in a for a in cff["authors"])
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert cff["version"] == project["version"] and cff["license"] == "MIT"
    (paper,) = cff["references"]
    assert paper["identifiers"][0]["value"] == "arXiv:2405.17403"
