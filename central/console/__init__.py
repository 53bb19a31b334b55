"""The operator's console: web pages for the people who run the programme, served by the
central service under ``/console`` (:mod:`central.console.web`), with its operators,
sessions and audit log in the store (:mod:`central.console.operators`)."""
