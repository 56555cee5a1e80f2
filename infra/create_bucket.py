"""One-shot: wait for the S3 endpoint, create the configured bucket if missing, exit 0.

Used by the compose service `create-bucket`. Bucket, region and endpoint come from the FluxForge
configuration (FLUXFORGE_CONFIG plus FLUXFORGE_* overrides); credentials from the standard AWS
variables. Exits 1 with the reason if the store does not answer within the deadline.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from fluxforge.config import load_config
from fluxforge.storage.s3 import S3Storage

log = logging.getLogger("fluxforge.create_bucket")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg = load_config()
    deadline = time.monotonic() + float(os.environ.get("FLUXFORGE_BUCKET_WAIT_S", "120"))
    layers = {
        "ingestion_storage": cfg.storage.ingestion,
        "etl_storage_input": cfg.storage.etl_input,
        "etl_storage_output": cfg.storage.etl_output,
    }
    for name, layer in layers.items():
        if layer.backend != "s3":
            continue
        while True:
            try:
                S3Storage(layer.bucket, layer.s3).ensure_bucket()
                log.info("bucket %s ready (%s)", layer.bucket, name)
                break
            except Exception as exc:  # the store may still be starting: retry until the deadline
                if time.monotonic() > deadline:
                    log.error("bucket %s (%s) not reachable: %s", layer.bucket, name, exc)
                    return 1
                endpoint = layer.s3.endpoint_url or "AWS"
                log.info("waiting for S3 at %s: %s", endpoint, type(exc).__name__)
                time.sleep(2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
