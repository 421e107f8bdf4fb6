"""The back office's frame: its name, and what its front page leaves out."""

from __future__ import annotations

from django.contrib import admin

admin.site.site_header = "bankcore back office"
admin.site.site_title = "bankcore back office"
admin.site.index_title = "Back office"
# No public site behind the back office: "View site" would lead nowhere.
admin.site.site_url = None
# The front page lists every screen; the side bar would take the width the money columns need.
admin.site.enable_nav_sidebar = False
