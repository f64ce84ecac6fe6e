"""The bundled lambox example function (a plain AWS Lambda Python handler)."""


def handler(event, context):
    response = {"statusCode": 200, "body": "hello from lambox"}
    if isinstance(event, dict):
        # Echo the event back, merged into the response (response keys win).
        merged = dict(event)
        merged.update(response)
        return merged
    response["event"] = event
    return response
