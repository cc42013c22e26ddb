"""The catalogue a fresh deployment offers; programme managers change it in the admin."""

from decimal import Decimal

from django.db import migrations

IMAGES = [
    {
        "slug": "python-cpu",
        "name": "Python (data science)",
        "image": "nac/python-cpu:2026.11",
        "description": "JupyterLab with NumPy, pandas and scikit-learn.",
        "gpu_capable": False,
        "sort_order": 10,
    },
    {
        "slug": "pytorch-gpu",
        "name": "PyTorch (CUDA)",
        "image": "nac/pytorch-gpu:2026.11",
        "description": "JupyterLab with PyTorch built for CUDA, for NVIDIA GPUs.",
        "gpu_capable": True,
        "sort_order": 20,
    },
]

PROFILES = [
    {
        "slug": "cpu-small",
        "name": "CPU small",
        "description": "2 CPU cores and 4 GiB for notebooks, data preparation and teaching.",
        "cpu_cores": Decimal("2"),
        "memory_mib": 4096,
        "shm_mib": 512,
        "gpu_count": 0,
        "charge_millicredits_per_second": 50,
        "audience": "both",
        "egress": "open",
        "sort_order": 10,
    },
    {
        "slug": "cpu-private",
        "name": "CPU, no internet",
        "description": "CPU small with no network access at all: for personal or government data.",
        "cpu_cores": Decimal("2"),
        "memory_mib": 4096,
        "shm_mib": 512,
        "gpu_count": 0,
        "charge_millicredits_per_second": 50,
        "audience": "both",
        "egress": "internal",
        "sort_order": 15,
    },
    {
        "slug": "gpu-1",
        "name": "1 GPU",
        "description": "One whole GPU with 8 CPU cores and 64 GiB.",
        "cpu_cores": Decimal("8"),
        "memory_mib": 65536,
        "shm_mib": 8192,
        "gpu_count": 1,
        "charge_millicredits_per_second": 1000,
        "audience": "both",
        "egress": "open",
        "sort_order": 20,
    },
    {
        "slug": "gpu-2",
        "name": "2 GPUs",
        "description": "Two whole GPUs with 16 CPU cores and 128 GiB, for startups.",
        "cpu_cores": Decimal("16"),
        "memory_mib": 131072,
        "shm_mib": 16384,
        "gpu_count": 2,
        "charge_millicredits_per_second": 2000,
        "audience": "startups",
        "egress": "open",
        "sort_order": 30,
    },
]


def seed(apps, schema_editor):
    SandboxImage = apps.get_model("launcher", "SandboxImage")
    ResourceProfile = apps.get_model("launcher", "ResourceProfile")
    for values in IMAGES:
        SandboxImage.objects.update_or_create(slug=values["slug"], defaults=values)
    for values in PROFILES:
        ResourceProfile.objects.update_or_create(slug=values["slug"], defaults=values)


class Migration(migrations.Migration):
    dependencies = [("launcher", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
