import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bankcore.settings.production")

django.setup(set_prefix=False)  # as django.core.wsgi.get_wsgi_application does

from bankcore.handlers import BankcoreWSGIHandler  # noqa: E402  (needs the app registry)

application = BankcoreWSGIHandler()
