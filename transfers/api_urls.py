"""The partner API's transfer routes, in /api/v1/ (``bankcore.api.urls``)."""

from django.urls import path

from transfers.api import TransferDetailApi, TransferListCreateApi, TransferReverseApi

urlpatterns = [
    path("transfers/", TransferListCreateApi.as_view(), name="transfers"),
    path("transfers/<uuid:transfer_id>/", TransferDetailApi.as_view(), name="transfer"),
    path("transfers/<uuid:transfer_id>/reverse/", TransferReverseApi.as_view(), name="transfer-reverse"),
]
