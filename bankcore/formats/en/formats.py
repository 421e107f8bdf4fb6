"""How the back office writes dates and times: ISO order, and every time with its zone's offset
(the bank's time zone is Asia/Shanghai, the audit trail's records are UTC: a time without its zone
would be read wrongly by one or the other)."""

DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
DATETIME_FORMAT = "Y-m-d H:i:s O"
SHORT_DATETIME_FORMAT = "Y-m-d H:i O"
TIME_FORMAT = "H:i:s"
