"""The oracle labeler: answers from ground truth and writes an Azure ML Data Labeling CSV export,
so the simulated labels go through the same parser and checks as human ones."""

from __future__ import annotations

from collections.abc import Mapping

from shared.core.exports import datastore_url, write_csv_export
from shared.core.naming import item_id_from_path
from shared.ports import ObjectStore
from shared.services.select import LABELING_CONTAINER

EXPORTS_CONTAINER = "exports"


class OracleLabeler:
    def __init__(self, objects: ObjectStore, truth: Mapping[str, str], *,
                 datastore: str = "workspaceblobstore") -> None:
        self._objects = objects
        self._truth = truth
        self._datastore = datastore

    def label_batch(self, batch_id: str) -> tuple[str, bytes]:
        """Label every file of a batch in the labeling input folder; return (export name, bytes)."""
        names = self._objects.list(LABELING_CONTAINER, f"{batch_id}/")
        rows = [
            (datastore_url(self._datastore, f"{LABELING_CONTAINER}/{n}"), self._truth[item_id_from_path(n)])
            for n in names
        ]
        data = write_csv_export(rows)
        export_name = f"{batch_id}.csv"
        self._objects.put(EXPORTS_CONTAINER, export_name, data, overwrite=True)
        return export_name, data
