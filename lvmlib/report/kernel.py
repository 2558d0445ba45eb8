"""The lvm-lab kernel's provisioner: the kernel talks to whoever starts it (papermill's CLI, nbclient, JupyterLab) over
Unix sockets in Jupyter's runtime folder, not loopback TCP, so ipykernel does not warn "Kernel is running over TCP
without encryption" and no other local user can connect to it. The kernelspec names it (metadata.kernel_provisioner)."""
from __future__ import annotations

import os
import uuid

from jupyter_client.provisioning import LocalProvisioner
from jupyter_core.paths import jupyter_runtime_dir

NAME = "lvm-ipc-provisioner"   # the entry point (pyproject.toml) that the kernelspec names


class IpcProvisioner(LocalProvisioner):
    async def pre_launch(self, **kwargs):
        km = self.parent
        if km is not None and km.transport == "tcp":
            os.makedirs(jupyter_runtime_dir(), exist_ok=True)
            km.transport = "ipc"
            km.ip = os.path.join(jupyter_runtime_dir(), f"kernel-{uuid.uuid4().hex[:12]}-ipc")
        return await super().pre_launch(**kwargs)
