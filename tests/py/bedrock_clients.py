"""The official AWS and Anthropic Bedrock clients against the gateway's Bedrock front door.

boto3's `bedrock-runtime` client (`invoke_model`, `invoke_model_with_response_stream`)
and the `anthropic` SDK's `AnthropicBedrock`, pointed at the front door with the virtual
key in `x-tollgate-key` (botocore takes a Bedrock API key, `AWS_BEARER_TOKEN_BEDROCK`,
only over HTTPS; here it signs with placeholder credentials the gateway never reads).
Prints one JSON object of what each saw; exits 1 on any surprise.

With a fourth argument, the Vertex front door's base URL, also the `anthropic` SDK's
`AnthropicVertex` there (model `claude-haiku-4-5@20251001`).

usage: bedrock_clients.py BASE_URL VIRTUAL_KEY MODEL_ID [VERTEX_BASE_URL]"""
import json
import os
import sys

base, key, model = sys.argv[1:4]
os.environ.pop("AWS_BEARER_TOKEN_BEDROCK", None)
os.environ.setdefault("AWS_ACCESS_KEY_ID", "unused")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "unused")

import boto3  # noqa: E402
import anthropic  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

out = {}
client = boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=base)
client.meta.events.register("before-sign.bedrock-runtime.*",
                            lambda request, **_: request.headers.__setitem__("x-tollgate-key", key))
body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
        "messages": [{"role": "user", "content": "ECHO:boto3-json"}]}
answer = json.loads(client.invoke_model(modelId=model, body=json.dumps(body))["body"].read())
out["invoke"] = answer["content"][0]["text"]

body["messages"][0]["content"] = "ECHO:boto3-stream"
events = []
for event in client.invoke_model_with_response_stream(modelId=model, body=json.dumps(body))["body"]:
    events.append(json.loads(event["chunk"]["bytes"]))
out["stream_types"] = [e["type"] for e in events]
out["stream"] = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
out["stream_output_tokens"] = next((e["usage"]["output_tokens"] for e in events if e["type"] == "message_delta"), None)

# A request the gateway refuses comes back as Bedrock's error, which botocore reads.
try:
    client.invoke_model(modelId=model, body=json.dumps({"anthropic_version": "bedrock-2023-05-31", "messages": []}))
    out["refused"] = None
except ClientError as e:
    out["refused"] = {"code": e.response["Error"]["Code"], "status": e.response["ResponseMetadata"]["HTTPStatusCode"],
                      "message": e.response["Error"]["Message"]}

bedrock = anthropic.AnthropicBedrock(aws_access_key="unused", aws_secret_key="unused", aws_region="us-east-1",
                                     base_url=base, default_headers={"x-tollgate-key": key}, max_retries=0)
message = bedrock.messages.create(model=model, max_tokens=64,
                                  messages=[{"role": "user", "content": "ECHO:sdk-json"}])
out["sdk"] = message.content[0].text
with bedrock.messages.stream(model=model, max_tokens=64,
                             messages=[{"role": "user", "content": "ECHO:sdk-stream"}]) as stream:
    out["sdk_stream"] = "".join(stream.text_stream)

if len(sys.argv) > 4:
    vertex = anthropic.AnthropicVertex(region="us-east5", project_id="acme-prod", base_url=sys.argv[4],
                                       access_token="unused", default_headers={"x-tollgate-key": key},
                                       max_retries=0)
    message = vertex.messages.create(model="claude-haiku-4-5@20251001", max_tokens=64,
                                     messages=[{"role": "user", "content": "ECHO:vertex-json"}])
    out["vertex"] = message.content[0].text
    with vertex.messages.stream(model="claude-haiku-4-5@20251001", max_tokens=64,
                                messages=[{"role": "user", "content": "ECHO:vertex-stream"}]) as stream:
        out["vertex_stream"] = "".join(stream.text_stream)

print(json.dumps(out))
