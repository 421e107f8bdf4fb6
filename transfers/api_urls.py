"""The partner API's transfer routes, in /api/v1/ (``bankcore.api.urls``)."""

from django.urls import path

from transfers.api import TransferDetailApi, TransferListCreateApi, TransferReverseApi
from transfers.api_batches import TransferBatchCreateApi, TransferBatchDetailApi

urlpatterns = [
    path("transfers/", TransferListCreateApi.as_view(), name="transfers"),
    path("transfers/<uuid:transfer_id>/", TransferDetailApi.as_view(), name="transfer"),
    path("transfers/<uuid:transfer_id>/reverse/", TransferReverseApi.as_view(), name="transfer-reverse"),
    path("transfer-batches/", TransferBatchCreateApi.as_view(), name="transfer-batches"),
    path("transfer-batches/<uuid:batch_id>/", TransferBatchDetailApi.as_view(), name="transfer-batch"),
]
