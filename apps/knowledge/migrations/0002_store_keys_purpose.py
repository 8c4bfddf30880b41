from django.db import migrations


def store_keys_mark(apps, schema_editor):
    """Keys issued for stores before the `knowledge` purpose existed: listed as what they are from now on."""
    ApiKey = apps.get_model("keys", "ApiKey")
    VectorStore = apps.get_model("knowledge", "VectorStore")
    store_keys = VectorStore.objects.filter(ingest_key__isnull=False).values("ingest_key_id")
    ApiKey.objects.filter(pk__in=store_keys, purpose="").update(purpose="knowledge")


class Migration(migrations.Migration):
    dependencies = [
        ("knowledge", "0001_initial"),
        ("keys", "0007_key_purpose_knowledge"),
    ]

    operations = [migrations.RunPython(store_keys_mark, migrations.RunPython.noop)]
