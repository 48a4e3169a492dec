#!/bin/sh
# Start the MLflow tracking server with its basic-auth app. Every credential arrives as an
# environment variable (docker-compose.yaml passes them on); nothing secret is written to disk.
# The arguments are `mlflow server`'s.
set -eu

: "${MLFLOW_AUTH_ADMIN_PASSWORD:?the first start creates the admin user with this password}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?the basic-auth app signs its CSRF tokens with this key}"
: "${PGPASSWORD:?the PostgreSQL password (the tracking store and the user database)}"

# With an S3-compatible endpoint (MinIO) make sure the artifact bucket exists; on AWS S3 create
# the bucket yourself and leave MLFLOW_S3_ENDPOINT_URL unset.
if [ -n "${MLFLOW_S3_ENDPOINT_URL:-}" ]; then
    python - <<'PY'
import os
import time

import boto3
from botocore.exceptions import ClientError, EndpointConnectionError

bucket = os.environ["MLFLOW_ARTIFACTS_BUCKET"]
s3 = boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"])
for attempt in range(30):
    try:
        s3.head_bucket(Bucket=bucket)
        break
    except ClientError:
        s3.create_bucket(Bucket=bucket)
        print(f"created bucket {bucket}")
        break
    except EndpointConnectionError:
        time.sleep(2)
else:
    raise SystemExit(f"S3 endpoint {os.environ['MLFLOW_S3_ENDPOINT_URL']} did not answer")
PY
fi

exec mlflow server "$@"
