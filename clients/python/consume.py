"""A Python consumer of the integrations service (the README's example, run by the tests).

Generate the stubs once (grpcio-tools from PyPI):

    python -m grpc_tools.protoc -I proto --python_out=clients/python \
        --grpc_python_out=clients/python proto/integrations/v1/integrations.proto

then: python clients/python/consume.py --grpc 127.0.0.1:50051 --org 1 --integration github
with SERVICE_ROLE_JWT in the environment. Prints one JSON line per step.
"""

import argparse
import json
import os

import grpc

from integrations.v1 import integrations_pb2 as pb
from integrations.v1 import integrations_pb2_grpc as rpc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grpc", default="127.0.0.1:50051")
    parser.add_argument("--org", required=True)
    parser.add_argument("--integration", required=True, help="UUID or provider name")
    parser.add_argument("--events", type=int, default=1, help="events to consume, then stop")
    args = parser.parse_args()
    metadata = [
        ("authorization", f"Bearer {os.environ['SERVICE_ROLE_JWT']}"),
        ("x-organization-id", args.org),
    ]
    with grpc.insecure_channel(args.grpc) as channel:
        # A valid access token (refreshed by the service when needed).
        token = rpc.OAuthServiceStub(channel).GetAccessToken(
            pb.GetAccessTokenRequest(id=args.integration), metadata=metadata
        )
        print(json.dumps({"access_token": token.access_token, "scopes": list(token.scopes)}))

        # Leased events: acknowledge each one, or RecordError to have it retried.
        webhooks = rpc.WebhookServiceStub(channel)
        stream = webhooks.SubscribeEvents(
            pb.SubscribeEventsRequest(organization_id=int(args.org), lease_seconds=60),
            metadata=metadata,
        )
        for n, event in enumerate(stream, start=1):
            payload = json.loads(event.payload_json)
            webhooks.MarkProcessed(pb.MarkProcessedRequest(event_id=event.id), metadata=metadata)
            print(json.dumps({"event_id": event.id, "event_type": event.event_type, "payload": payload}))
            if n == args.events:
                stream.cancel()
                break


if __name__ == "__main__":
    main()
