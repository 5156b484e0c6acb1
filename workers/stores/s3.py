"""The S3 artifact store, through boto3 (any S3-compatible endpoint: AWS, MinIO, moto).

botocore's exceptions stop here and come out as ``mesh.errors``:

* ``NoSuchKey`` / 404                          -> ``NotFound``
* ``NoSuchBucket``, ``AccessDenied``, bad keys  -> ``ConfigError`` (retrying cannot help)
* 5xx, throttling, timeouts, connection errors -> ``ProviderError`` (retry later)

Credentials come from the settings (``SecretStr``) or, when unset, from boto3's usual
chain (environment, instance role); they never appear in messages or reprs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from worker_mesh.mesh.errors import ConfigError, NotFound, ProviderError
from worker_mesh.mesh.extras import require
from worker_mesh.mesh.settings import ArtifactSettings
from worker_mesh.workers.stores.keys import check_key

_CONFIG_CODES = {"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                 "AllAccessDisabled", "InvalidBucketName", "403"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


@contextlib.contextmanager
def translate_s3_errors(what: str) -> Iterator[None]:
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        NoCredentialsError,
        ParamValidationError,
    )
    from botocore.exceptions import (
        ConnectionError as BotoConnectionError,
    )

    try:
        yield
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _MISSING_CODES:
            raise NotFound(f"{what}: not found") from exc
        if code in _CONFIG_CODES:
            raise ConfigError(f"{what}: S3 refused the request ({code})") from exc
        if status >= 500 or code in {"SlowDown", "Throttling", "RequestTimeout", "InternalError"}:
            raise ProviderError(f"{what}: S3 is failing for now ({code or status})") from exc
        raise ConfigError(f"{what}: S3 error {code or status}") from exc
    except NoCredentialsError as exc:
        raise ConfigError(f"{what}: no S3 credentials configured") from exc
    except ParamValidationError as exc:
        raise ConfigError(f"{what}: invalid S3 request: {exc}") from exc
    except BotoConnectionError as exc:
        raise ProviderError(f"{what}: cannot reach S3 ({type(exc).__name__})") from exc
    except BotoCoreError as exc:
        raise ProviderError(f"{what}: S3 client error ({type(exc).__name__})") from exc


class S3ArtifactStore:
    """Objects ``s3://<bucket>/<prefix><key>``."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self._client = client
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"

    def __repr__(self) -> str:  # no client (and so no credentials) in reprs
        return f"S3ArtifactStore(bucket={self.bucket!r}, prefix={self.prefix!r})"

    @classmethod
    def from_settings(cls, s: ArtifactSettings) -> S3ArtifactStore:
        require("boto3", "s3")
        import boto3
        from botocore.config import Config

        if not s.s3_bucket:
            raise ConfigError("artifacts.backend is s3 but artifacts.s3_bucket is not set")
        kw: dict[str, Any] = {
            "region_name": s.s3_region,
            "config": Config(connect_timeout=s.s3_connect_timeout_s, read_timeout=s.s3_read_timeout_s,
                             retries={"max_attempts": s.s3_max_attempts, "mode": "standard"}),
        }
        if s.s3_endpoint_url:
            kw["endpoint_url"] = s.s3_endpoint_url
        if s.s3_access_key_id is not None and s.s3_secret_access_key is not None:
            kw["aws_access_key_id"] = s.s3_access_key_id.get_secret_value()
            kw["aws_secret_access_key"] = s.s3_secret_access_key.get_secret_value()
        client = boto3.session.Session().client("s3", **kw)
        return cls(client, s.s3_bucket, s.s3_prefix)

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def put(self, key: str, data: bytes, *, content_type: str = "application/json") -> str:
        with translate_s3_errors(f"put {self.uri(key)}"):
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data,
                                    ContentType=content_type)
        return self.uri(key)

    def get(self, key: str) -> bytes:
        with translate_s3_errors(f"get {self.uri(key)}"):
            obj = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            return obj["Body"].read()  # type: ignore[no-any-return]

    def exists(self, key: str) -> bool:
        try:
            with translate_s3_errors(f"head {self.uri(key)}"):
                self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except NotFound:
            return False
        return True

    def list(self, prefix: str = "") -> list[str]:
        out: list[str] = []
        with translate_s3_errors(f"list s3://{self.bucket}/{self.prefix}{prefix}"):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix)
            for page in pages:
                out.extend(o["Key"][len(self.prefix):] for o in page.get("Contents", []))
        return sorted(out)
