"""The product's ``function_app``, as the Azure-loop test's app processes load it (``--app
tests.support.e2e_app:app``). The same app, the same wiring, the same settings; only what a loopback
machine cannot have is replaced, and only in this test process:

* the managed identity: ``azure.identity.DefaultAzureCredential`` gives a static token (the ADX and
  Data Labeling stand-ins check that a bearer token arrives, not whose it is);
* the Azure ML workspace of the dispatch stage (models, data assets, the online deployment): the
  stand-in at the adapter's port, kept in Azurite (:class:`tests.support.aml_standin.StandinAzureML`),
  since no workspace emulator exists. GitHub, ADX, Blob, Queue and Data Labeling stay real clients
  talking HTTP to their stand-ins or to Azurite.
"""

from __future__ import annotations

import os
from functools import lru_cache

import azure.identity

from tests.support.credentials import StaticTokenCredential

azure.identity.DefaultAzureCredential = StaticTokenCredential  # type: ignore[misc, assignment]

from functions.github_dispatch import wiring as _dispatch  # noqa: E402  (after the credential patch)
from shared import backends as _backends  # noqa: E402
from shared.settings import get_settings  # noqa: E402
from tests.support.aml_standin import StandinAzureML  # noqa: E402


@lru_cache(maxsize=1)
def _activities():  # type: ignore[no-untyped-def]
    settings = get_settings()
    return _dispatch.build_activities(settings, ports=_backends.backend(),
                                      azureml=StandinAzureML(os.environ["AL_STORAGE_CONNECTION_STRING"]))


_dispatch.activities = _activities  # type: ignore[assignment]  # before the blueprint imports the name

from function_app import app  # noqa: E402

__all__ = ["app"]
