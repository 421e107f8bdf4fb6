"""The back office's own machinery, shared by every app's admin screens.

What an app's admin module (and any new back-office page) builds on:

- ``backoffice.pages``: who acts and whether they may (``admin_actor``, ``may``, ``require_perm``),
  a page in the back office's frame (``backoffice_render``), a service's refusal shown on a form
  or as a message (``refusal_on_form``, ``service_error``, ``sent_again``), staff by name
  (``person``).
- ``backoffice.forms``: the form bases (``IdempotentForm``) and fields (``AmountField``,
  ``AccountNumberField``, ``ReasonForm``).
- ``backoffice.review``: the review page every money movement and state change goes through, and
  the signed confirmation that alone lets its POST be carried out (``review_or_form``, ``Review``).
- ``backoffice.display``: money, account numbers, ids and times as the bank writes them.
- ``backoffice/templatetags/backoffice.py``: the same for templates (``{% load backoffice %}``).

Layering: ``backoffice`` imports only ``bankcore`` and ``audit``; ``accounts`` and ``transfers``
import it, and nothing below them does (``bankcore/tests/project/test_layering.py``).
"""
