"""Google API failures as one line a user can act on, instead of a traceback.

Checks use the HTTP-status classes (Forbidden, TooManyRequests...), which the
gRPC-status ones (PermissionDenied, ResourceExhausted...) subclass, so REST,
gRPC and Cloud Storage errors all match.

Only the failures a user causes or can fix are explained; anything else is a
bug and keeps its traceback.
"""
import re

_REQUEST_PREFIX = re.compile(r"^(GET|POST|PUT|PATCH|DELETE) \S+: ")


def explain(error):
    """A one-line explanation of ERROR, or None when it is not a known Google API failure."""
    import requests
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth

    if isinstance(error, auth.DefaultCredentialsError):
        return ("no Google credentials found: run `gcloud auth application-default login` "
                "or set GOOGLE_APPLICATION_CREDENTIALS")
    if isinstance(error, auth.RefreshError):
        return (f"Google credentials could not be refreshed ({_first_line(error)}): "
                "run `gcloud auth application-default login` again")
    if isinstance(error, (auth.TransportError, requests.ConnectionError)):
        return f"cannot reach Google Cloud ({_first_line(error)}): check the network or proxy"
    if not isinstance(error, api.GoogleAPICallError):
        return None
    message = _REQUEST_PREFIX.sub("", _first_line(error.message or str(error)))
    if isinstance(error, api.Unauthorized):
        return f"not signed in to Google Cloud ({message}): run `gcloud auth application-default login`"
    if isinstance(error, api.Forbidden):
        return (f"permission denied: {message} (check the project, that the Vertex AI and Cloud Storage APIs "
                "are enabled, and your roles)")
    if isinstance(error, api.NotFound):
        return f"not found: {message}"
    if isinstance(error, api.TooManyRequests):
        return (f"quota exceeded: {message} (request more quota for this machine or accelerator in this "
                "region, or use another region or spec)")
    if isinstance(error, api.BadRequest):
        return f"rejected by the API: {message}"
    return f"Google API error {error.code}: {message}"


def _first_line(text):
    return str(text).strip().splitlines()[0] if str(text).strip() else type(text).__name__
