"""Seed the allow-list with Pakistani universities and their e-mail domains.

Programme managers maintain the list in the admin afterwards; this only adds what is missing.
"""

from django.db import migrations

UNIVERSITIES = [
    ("National University of Sciences and Technology", "NUST", "Islamabad", ["nust.edu.pk"]),
    ("Lahore University of Management Sciences", "LUMS", "Lahore", ["lums.edu.pk"]),
    ("National University of Computer and Emerging Sciences", "FAST-NU", "Islamabad", ["nu.edu.pk"]),
    ("Ghulam Ishaq Khan Institute", "GIKI", "Topi", ["giki.edu.pk"]),
    ("COMSATS University Islamabad", "COMSATS", "Islamabad", ["comsats.edu.pk"]),
    ("University of Engineering and Technology, Lahore", "UET", "Lahore", ["uet.edu.pk"]),
    ("Punjab University College of Information Technology", "PUCIT", "Lahore", ["pucit.edu.pk"]),
    ("Institute of Business Administration, Karachi", "IBA", "Karachi", ["iba.edu.pk"]),
    ("Information Technology University", "ITU", "Lahore", ["itu.edu.pk"]),
    ("Quaid-i-Azam University", "QAU", "Islamabad", ["qau.edu.pk"]),
]


def seed(apps, schema_editor):
    University = apps.get_model("onboarding", "University")
    UniversityDomain = apps.get_model("onboarding", "UniversityDomain")
    for name, short_name, city, domains in UNIVERSITIES:
        university, _ = University.objects.get_or_create(
            name=name, defaults={"short_name": short_name, "city": city}
        )
        for domain in domains:
            UniversityDomain.objects.get_or_create(domain=domain, defaults={"university": university})


class Migration(migrations.Migration):
    dependencies = [("onboarding", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
