#!/usr/bin/env python3
"""Install a wheel in the lab's dom0 without pip (pip takes over a minute under TCG).

    install_wheel.py WHEEL

A wheel is a zip laid out for site-packages: unpack it into dom0's site directory, move any
<name>.data/{purelib,platlib,scripts} parts into place, and write the console scripts listed in
its entry_points.txt.  The dom0 disk is a throwaway qemu snapshot, so nothing is uninstalled.
"""

import configparser
import os
import shutil
import sys
import sysconfig
import zipfile

wheel = sys.argv[1]
if "posix_local" in sysconfig.get_scheme_names():  # Debian: /usr/local/lib/python3.X/dist-packages
    site = sysconfig.get_path("platlib", "posix_local")
else:
    site = sysconfig.get_path("platlib")
bindir = "/usr/local/bin"
os.makedirs(site, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    z.extractall(site)
    names = z.namelist()
for data in {n.split("/")[0] for n in names if n.split("/")[0].endswith(".data")}:
    root = os.path.join(site, data)
    for kind in os.listdir(root):
        dest = {"purelib": site, "platlib": site, "scripts": bindir}.get(kind)
        if dest:
            shutil.copytree(os.path.join(root, kind), dest, dirs_exist_ok=True)
    shutil.rmtree(root)
dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
eps = configparser.ConfigParser()
eps.read(os.path.join(site, dist_info, "entry_points.txt"))
if eps.has_section("console_scripts"):
    for name, target in eps.items("console_scripts"):
        module, _, func = target.partition(":")
        path = os.path.join(bindir, name)
        with open(path, "w") as f:
            f.write(
                f"#!/usr/bin/python3\nimport sys\nfrom {module} import {func.strip()}\n"
                f"sys.exit({func.strip()}())\n"
            )
        os.chmod(path, 0o755)
print(f"installed {os.path.basename(wheel)} into {site}")
