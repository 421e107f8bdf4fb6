"""The partner API's account routes, in /api/v1/ (``bankcore.api.urls``)."""

from django.urls import path

from accounts.api import AccountDetailApi, AccountEntriesApi, AccountListApi

urlpatterns = [
    path("accounts/", AccountListApi.as_view(), name="accounts"),
    path("accounts/<str:number>/", AccountDetailApi.as_view(), name="account"),
    path("accounts/<str:number>/entries/", AccountEntriesApi.as_view(), name="account-entries"),
]
