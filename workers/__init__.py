"""Taskiq workers and the timer scheduler: hold expiry, queue promotion and lapse, the sweep."""
