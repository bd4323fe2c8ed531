"""A hospital app's database as Django's ORM writes it (models, constraints and indexes as an
app declares them), run in a process of its own: Django's settings are global to a process."""

import sys
from datetime import UTC, datetime

import django
from django.conf import settings

settings.configure(
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": sys.argv[1]}},
    INSTALLED_APPS=[],
    USE_TZ=True,
)
django.setup()

import uuid  # noqa: E402

from django.db import connection, models  # noqa: E402
from django.db.models.functions import Lower, Now  # noqa: E402


class Clinic(models.Model):
    name = models.CharField(max_length=80)
    email = models.EmailField()
    active = models.BooleanField(default=True)
    code = models.UUIDField(default=uuid.uuid4, unique=True)
    opened = models.DateTimeField(db_default=Now())
    beds = models.PositiveIntegerField(default=0)

    class Meta:
        app_label = "hospital"
        constraints = [  # noqa: RUF012
            models.UniqueConstraint(Lower("email"), name="clinic_email_ci"),
            models.UniqueConstraint(
                fields=["name"], condition=models.Q(active=True), name="live_clinic_name"
            ),
            models.CheckConstraint(condition=models.Q(beds__lte=500), name="beds_at_most_500"),
        ]


class Patient(models.Model):
    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE)
    name = models.CharField(max_length=80)
    attrs = models.JSONField(default=dict)
    admitted = models.DateTimeField()

    class Meta:
        app_label = "hospital"
        indexes = [models.Index(fields=["-admitted"], name="patient_recent")]  # noqa: RUF012


with connection.schema_editor() as editor:
    editor.create_model(Clinic)
    editor.create_model(Patient)
for i in range(12):
    clinic = Clinic.objects.create(
        name=f"Clinic {i % 10}", email=f"c{i}@x.org", active=i < 10, beds=i * 10
    )
    for j in range(3):
        Patient.objects.create(
            clinic=clinic,
            name=f"p{i}-{j}",
            attrs={"n": j} if j else [],
            admitted=datetime(2024, 1 + i % 12, 1 + j, 8, tzinfo=UTC),
        )
