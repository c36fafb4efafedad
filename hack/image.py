#!/usr/bin/env python3
"""Assembles the operator's OCI image layout tarball from a static binary (hack/image.sh builds
it): one layer with the binary, the CA roots, a nonroot user and an empty /tmp; a config whose
user, entrypoint, command and port come from the Dockerfile's final stage, so that the Dockerfile
stays the one description of the image (crates/operator/tests/image.rs checks both against the
chart).

Python's standard library only. Reproducible: entries sorted, owned by 0:0 (names left empty),
stamped with SOURCE_DATE_EPOCH; gzip without a name or time; JSON with sorted keys.
"""

import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# rustls-native-certs (under reqwest's platform verifier) finds this path without SSL_CERT_FILE:
# it is openssl-probe's first candidate on Linux. The binary has no compiled-in roots.
CA_ROOTS = "etc/ssl/certs/ca-certificates.crt"


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def dockerfile_final_stage():
    """USER, ENTRYPOINT, CMD and EXPOSE of the Dockerfile's last stage (JSON forms only)."""
    stage = read("Dockerfile").split("\nFROM ")[-1]
    found = {}
    for line in stage.splitlines():
        match = re.match(r"(USER|ENTRYPOINT|CMD|EXPOSE)\s+(.*)", line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return {
        "user": found["USER"],
        "entrypoint": json.loads(found["ENTRYPOINT"]),
        "cmd": json.loads(found["CMD"]),
        "port": found["EXPOSE"],
    }


def yaml_value(text, key, section=None):
    """A plain scalar of the chart's YAML (top level, or one level under `section`)."""
    if section:
        text = re.search(rf"(?m)^{section}:\n((?:[ #].*\n|\n)*)", text).group(1)
        pattern = rf"(?m)^  {key}:\s*(.*)$"
    else:
        pattern = rf"(?m)^{key}:\s*(.*)$"
    return re.search(pattern, text).group(1).strip().strip('"')


def full_name(repository, tag):
    """The name a kubelet resolves `repository:tag` to (Docker Hub's implicit prefixes)."""
    first, _, rest = repository.partition("/")
    if not rest:
        repository = f"docker.io/library/{repository}"
    elif "." not in first and ":" not in first and first != "localhost":
        repository = f"docker.io/{repository}"
    return f"{repository}:{tag}"


def layer(binary_path, entrypoint, ca_roots_path, mtime):
    """The uncompressed layer: every entry sorted, 0:0 unless said otherwise, fixed mtime."""
    with open(binary_path, "rb") as f:
        binary = f.read()
    with open(ca_roots_path, "rb") as f:
        ca_roots = f.read()
    # The nonroot user (65532) by name, from the files the Dockerfile copies too.
    passwd = read("hack/rootfs/etc/passwd").encode()
    group = read("hack/rootfs/etc/group").encode()

    binary_name = entrypoint.lstrip("/")
    dirs = {"etc": 0o755, "etc/ssl": 0o755, "etc/ssl/certs": 0o755, "tmp": 0o1777}
    files = {
        binary_name: (0o755, binary),
        "etc/passwd": (0o644, passwd),
        "etc/group": (0o644, group),
        CA_ROOTS: (0o644, ca_roots),
    }
    # Every parent of the binary must exist as a directory entry of its own.
    parent = os.path.dirname(binary_name)
    while parent:
        dirs.setdefault(parent, 0o755)
        parent = os.path.dirname(parent)

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        # In the order of the names as archived (a directory's ends in "/").
        for name in sorted(set(dirs) | set(files), key=lambda n: n + "/" if n in dirs else n):
            info = tarfile.TarInfo(name)
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if name in dirs:
                info.type = tarfile.DIRTYPE
                info.mode = dirs[name]
                tar.addfile(info)
            else:
                info.mode, data = files[name]
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def gzipped(data):
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return out.getvalue()


def canonical_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def descriptor(media_type, data, **extra):
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
        **extra,
    }


def git_revision():
    try:
        return subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True, help="the static operator binary")
    parser.add_argument("--ca-roots", required=True, help="a PEM bundle of CA certificates")
    parser.add_argument("--out", required=True, help="the OCI image layout tarball to write")
    args = parser.parse_args()

    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    created = datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc)
    created = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    docker = dockerfile_final_stage()
    workspace = tomllib.loads(read("Cargo.toml"))["workspace"]["package"]
    chart = read("charts/compshare-operator/Chart.yaml")
    values = read("charts/compshare-operator/values.yaml")
    app_version = yaml_value(chart, "appVersion")
    if app_version != workspace["version"]:
        raise SystemExit(
            f"the chart's appVersion {app_version} is not the crates' version {workspace['version']}"
        )

    tar = layer(args.binary, docker["entrypoint"][0], args.ca_roots, mtime)
    layer_blob = gzipped(tar)
    labels = {
        "org.opencontainers.image.title": "compshare-operator",
        "org.opencontainers.image.source": yaml_value(chart, "home"),
        "org.opencontainers.image.version": workspace["version"],
        "org.opencontainers.image.licenses": workspace["license"],
        "org.opencontainers.image.created": created,
    }
    revision = git_revision()
    if revision:
        labels["org.opencontainers.image.revision"] = revision
    config = canonical_json(
        {
            "created": created,
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "User": docker["user"],
                "Entrypoint": docker["entrypoint"],
                "Cmd": docker["cmd"],
                "ExposedPorts": {f"{docker['port']}/tcp": {}},
                "WorkingDir": "/",
                "Labels": labels,
            },
            "rootfs": {
                "type": "layers",
                "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()],
            },
            "history": [{"created": created, "created_by": "hack/image.sh"}],
        }
    )
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor("application/vnd.oci.image.config.v1+json", config),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer_blob)],
        }
    )
    repository = yaml_value(values, "repository", section="image")
    # containerd (`ctr images import`) names the image after io.containerd.image.name; the
    # OCI annotation carries the tag, as `skopeo copy oci-archive:FILE:TAG` expects it.
    manifest_descriptor = descriptor(
        "application/vnd.oci.image.manifest.v1+json",
        manifest,
        platform={"architecture": "amd64", "os": "linux"},
        annotations={
            "io.containerd.image.name": full_name(repository, app_version),
            "org.opencontainers.image.ref.name": app_version,
        },
    )
    index = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [manifest_descriptor],
        }
    )

    entries = {
        "oci-layout": canonical_json({"imageLayoutVersion": "1.0.0"}),
        "index.json": index,
    }
    for blob in (manifest, config, layer_blob):
        entries["blobs/sha256/" + hashlib.sha256(blob).hexdigest()] = blob
    directories = ["blobs", "blobs/sha256"]
    with tarfile.open(args.out + ".tmp", mode="w", format=tarfile.USTAR_FORMAT) as out:
        for name in sorted(directories + list(entries)):
            info = tarfile.TarInfo(name)
            info.mtime = mtime
            info.uname = info.gname = ""
            if name in directories:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                out.addfile(info)
            else:
                info.mode, info.size = 0o644, len(entries[name])
                out.addfile(info, io.BytesIO(entries[name]))
    os.replace(args.out + ".tmp", args.out)
    print(f"image {manifest_descriptor['digest']}", file=sys.stderr)


if __name__ == "__main__":
    main()
