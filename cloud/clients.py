"""Which Google project, region, endpoints and credentials the commands use.

Credentials are Application Default Credentials (`gcloud auth application-default
login`, GOOGLE_APPLICATION_CREDENTIALS, or the VM's service account); nothing
here stores them. Project and region come from the flag, then the environment,
then the active gcloud configuration, then (project only) ADC.

For tests and local fakes, endpoints can be moved: VERTEX_API_ENDPOINT and
LOGGING_API_ENDPOINT (a URL), and STORAGE_EMULATOR_HOST as google-cloud-storage
reads it. A plain-http endpoint is a local fake, so it gets anonymous credentials.
"""
import configparser
import os
from pathlib import Path

from trainer.errors import UserError

DEFAULT_REGION = "us-central1"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


def project_id(flag=None, ask_adc=True):
    """The Google Cloud project: --project, $GOOGLE_CLOUD_PROJECT, gcloud config, then ADC's project.

    With ASK_ADC false (offline use such as --dry-run), None instead of asking ADC.
    """
    found = (flag or os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("CLOUDSDK_CORE_PROJECT")
             or _gcloud_setting("core", "project"))
    if found or not ask_adc:
        return found
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        _, found = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    except DefaultCredentialsError:
        found = None
    if not found:
        raise UserError("no Google Cloud project: pass --project, set GOOGLE_CLOUD_PROJECT, "
                        "or run `gcloud config set project PROJECT`")
    return found


def region_name(flag=None):
    """The Vertex AI region: --region, $GOOGLE_CLOUD_REGION, gcloud's ai/region, else us-central1."""
    return (flag or os.environ.get("GOOGLE_CLOUD_REGION") or os.environ.get("CLOUDSDK_AI_REGION")
            or _gcloud_setting("ai", "region") or DEFAULT_REGION)


def job_client(region):
    """A Vertex AI JobServiceClient for REGION, over REST (the transport the tests exercise)."""
    from google.cloud import aiplatform_v1

    endpoint = os.environ.get("VERTEX_API_ENDPOINT") or f"{region}-aiplatform.googleapis.com"
    return aiplatform_v1.JobServiceClient(
        transport="rest", client_options={"api_endpoint": endpoint}, credentials=_local_fake_credentials(endpoint))


def storage_client(project=None):
    """A google-cloud-storage client billed to PROJECT (resolved as project_id does).

    Anonymous, with no project needed, when STORAGE_EMULATOR_HOST points at an emulator.
    """
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return storage.Client.create_anonymous_client()
    return storage.Client(project=project_id(project))


def logging_session():
    """(base URL, authorised requests session) for the Cloud Logging REST API."""
    import google.auth
    from google.auth.transport.requests import AuthorizedSession

    endpoint = os.environ.get("LOGGING_API_ENDPOINT") or "https://logging.googleapis.com"
    credentials = _local_fake_credentials(endpoint)
    if credentials is None:
        credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    return endpoint.rstrip("/"), AuthorizedSession(credentials)


def console_url(project, region, job_id):
    """The job's page in the Google Cloud console."""
    return f"https://console.cloud.google.com/vertex-ai/locations/{region}/training/{job_id}?project={project}"


def _local_fake_credentials(endpoint):
    if endpoint.startswith("http://"):
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()
    return None


def _gcloud_setting(section, key):
    """A value from the active gcloud configuration file, read directly (no slow gcloud call)."""
    config_dir = Path(os.environ.get("CLOUDSDK_CONFIG") or Path.home() / ".config" / "gcloud")
    try:
        active = (config_dir / "active_config").read_text().strip() or "default"
    except OSError:
        active = "default"
    parser = configparser.ConfigParser()
    parser.read(config_dir / "configurations" / f"config_{active}")
    return parser.get(section, key, fallback=None) or None
