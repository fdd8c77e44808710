"""Calling the integrations service from Python: a valid access token for an integration
(GetAccessToken), then the organization's webhook events as a stream (SubscribeEvents), each
acknowledged with MarkProcessed once handled.

Generate the stubs from the repository's proto/ first (see README.md beside this file):

    python -m grpc_tools.protoc -I ../../proto --python_out=gen --grpc_python_out=gen \
        integrations/v1/integrations.proto

    SERVICE_ROLE_JWT=... ORGANIZATION_ID=1 PYTHONPATH=gen \
        python integrations_client.py github 1

Arguments: the integration (provider name or UUID) and how many events to handle before
exiting (default: run until stopped). The token is used, never printed.
"""

import os
import sys

import grpc

from integrations.v1 import integrations_pb2 as pb
from integrations.v1 import integrations_pb2_grpc as rpc


def metadata(jwt, organization_id):
    """The service_role credentials and the organization an internal caller acts for."""
    return (
        ("authorization", f"Bearer {jwt}"),
        ("x-organization-id", str(organization_id)),
    )


def run(service_address, jwt, organization_id, integration, max_events=None):
    """Gets a token, then handles events until `max_events` (or the stream's end).
    Answers (length of the token, [events handled])."""
    auth = metadata(jwt, organization_id)
    with grpc.insecure_channel(service_address) as channel:
        token = rpc.OAuthServiceStub(channel).GetAccessToken(
            pb.GetAccessTokenRequest(id=integration), metadata=auth, timeout=10
        )
        expires = token.expires_at if token.HasField("expires_at") else "never"
        print(f"access token for {integration}: {len(token.access_token)} characters, expires {expires}")

        webhooks = rpc.WebhookServiceStub(channel)
        # Events are leased to this consumer; one not acknowledged within the lease is
        # delivered again (here or to another consumer).
        stream = webhooks.SubscribeEvents(
            pb.SubscribeEventsRequest(organization_id=organization_id, lease_seconds=60),
            metadata=auth,
        )
        handled = []
        try:
            for event in stream:
                print(f"event {event.id} ({event.event_type} from {event.provider}), attempt {event.retry_count}")
                # Handle the event here; on failure call RecordError instead and it is retried.
                webhooks.MarkProcessed(pb.MarkProcessedRequest(event_id=event.id), metadata=auth, timeout=10)
                handled.append(event)
                if max_events is not None and len(handled) >= max_events:
                    break
        finally:
            stream.cancel()
        return len(token.access_token), handled


def main():
    jwt = os.environ.get("SERVICE_ROLE_JWT")
    if not jwt:
        sys.exit("set SERVICE_ROLE_JWT (Supabase's service_role JWT)")
    address = os.environ.get("SERVICE_ADDRESS", "127.0.0.1:50051")
    organization_id = int(os.environ.get("ORGANIZATION_ID", "1"))
    integration = sys.argv[1] if len(sys.argv) > 1 else "github"
    max_events = int(sys.argv[2]) if len(sys.argv) > 2 else None
    _, handled = run(address, jwt, organization_id, integration, max_events)
    print(f"{len(handled)} events handled")


if __name__ == "__main__":
    main()
