#!/usr/bin/env python3
"""Builds scanner/examples/example-image.tar.gz, the image `imagewarden scan` scans when
given no target: the real alpine:3.10 layer (scanner/testdata/alpine-310.tar.gz) plus a
layer holding the package metadata of three real, old application packages, taken from
the packages themselves (fetched by tests/scripts/fetch-fixtures.sh):
Django 3.2 (wheel dist-info), PyYAML 5.3 (sdist PKG-INFO) and lodash 4.17.15 (package.json).
"""
import gzip, hashlib, io, json, os, sys, tarfile, zipfile

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))
fixtures = os.environ.get("IMAGEWARDEN_FIXTURES") or os.path.expanduser("~/.cache/imagewarden/fixtures")

def base_layer():
    with tarfile.open(os.path.join(root, "scanner/testdata/alpine-310.tar.gz")) as t:
        for m in t.getmembers():
            if m.name.endswith("layer.tar"):
                return t.extractfile(m).read()
    sys.exit("no layer in alpine-310.tar.gz")

def add(tar, path, data):
    info = tarfile.TarInfo(path)
    info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
    tar.addfile(info, io.BytesIO(data))

def app_layer():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        with zipfile.ZipFile(os.path.join(fixtures, "pypi/Django-3.2-py3-none-any.whl")) as whl:
            for name in ("METADATA", "WHEEL", "top_level.txt"):
                add(tar, f"usr/lib/python3.8/site-packages/Django-3.2.dist-info/{name}",
                    whl.read(f"Django-3.2.dist-info/{name}"))
        with tarfile.open(os.path.join(fixtures, "pypi/PyYAML-5.3.tar.gz")) as sdist:
            add(tar, "usr/lib/python3.8/site-packages/PyYAML-5.3-py3.8.egg-info/PKG-INFO",
                sdist.extractfile("PyYAML-5.3/PKG-INFO").read())
        with tarfile.open(os.path.join(fixtures, "npm/lodash-4.17.15.tgz")) as pkg:
            add(tar, "srv/app/node_modules/lodash/package.json",
                pkg.extractfile("package/package.json").read())
    return buf.getvalue()

layers = [base_layer(), app_layer()]
diff_ids = ["sha256:" + hashlib.sha256(l).hexdigest() for l in layers]
config = json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"Cmd": ["python3", "-m", "http.server"], "WorkingDir": "/srv/app"},
    "rootfs": {"type": "layers", "diff_ids": diff_ids},
    "history": [{"created_by": "alpine:3.10 base"}, {"created_by": "COPY app packages /"}],
}, separators=(",", ":")).encode()
config_name = hashlib.sha256(config).hexdigest() + ".json"
out = io.BytesIO()
with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
    names = []
    for i, l in enumerate(layers):
        name = f"{diff_ids[i][7:]}/layer.tar"
        add(tar, name, l)
        names.append(name)
    add(tar, config_name, config)
    add(tar, "manifest.json", json.dumps([{"Config": config_name, "RepoTags": ["imagewarden/example:1.0"], "Layers": names}]).encode())
dest = os.path.join(here, "example-image.tar.gz")
with open(dest, "wb") as f:
    f.write(gzip.compress(out.getvalue(), mtime=0))
print(dest)
