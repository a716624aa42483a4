# The SIEM exporter of the audit trail (server/siem_export.cpp): formatting, and
# delivery to an in-test TLS syslog receiver on 127.0.0.1.
parry_test(test_siem SOURCES test_siem.cpp LIBS parry_server SQLite::SQLite3)
