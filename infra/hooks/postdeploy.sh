#!/bin/sh
# azd postdeploy hook (azure.yaml): subscribe the label app's Event Grid blob trigger to the exports account.
#
# Flex Consumption runs the Blob trigger only with the Event Grid source. main.bicep creates the system topic
# on the exports account; the webhook subscription (infra/eventgrid/exports-subscription.bicep) can only be
# created after the code is deployed: the host creates the blobs_extension system key once it has loaded the
# trigger, and Event Grid validates the endpoint on creation. Microsoft's azd Event Grid blob quickstart does
# the same step in its post-deploy hook. Safe to re-run (`azd hooks run postdeploy`).
set -eu

value() { # azd passes the environment's values to hooks; ask azd when run by hand
  eval "v=\${$1:-}"
  [ -n "$v" ] || v=$(azd env get-value "$1" 2>/dev/null || true)
  printf '%s' "$v"
}

app=$(value SERVICE_LABELS_NAME)
app_rg=$(value AZURE_RESOURCE_GROUP)
app_sub=$(value AZURE_SUBSCRIPTION_ID)
topic=$(value EXPORTS_SYSTEM_TOPIC_NAME)
topic_rg=$(value EXPORTS_SYSTEM_TOPIC_RESOURCE_GROUP)
topic_sub=$(value EXPORTS_SYSTEM_TOPIC_SUBSCRIPTION_ID)
container=$(value AL_EXPORTS_CONTAINER)
prefix=$(value AL_EXPORTS_PREFIX)
for required in app app_rg app_sub topic topic_rg topic_sub container; do
  eval "[ -n \"\$$required\" ]" || { echo "postdeploy: $required is empty; run 'azd provision' first" >&2; exit 1; }
done

# The key appears when the host has started with the deployed package; only its presence is queried here.
echo "postdeploy: waiting for the blobs_extension key of $app"
tries=0
until [ "$(az functionapp keys list --subscription "$app_sub" -g "$app_rg" -n "$app" \
            --query 'systemKeys.blobs_extension != `null`' -o tsv 2>/dev/null || true)" = "true" ]; do
  tries=$((tries + 1))
  if [ "$tries" -gt 30 ]; then
    echo "postdeploy: no blobs_extension key after 5 minutes: is the labels app deployed and running?" >&2
    exit 1
  fi
  # A request wakes the app, so that the host loads the blob trigger.
  curl -s -o /dev/null "https://$(az functionapp show --subscription "$app_sub" -g "$app_rg" -n "$app" \
    --query defaultHostName -o tsv)/" || true
  sleep 10
done

echo "postdeploy: subscribing $app to BlobCreated under $container/$prefix (topic $topic)"
az deployment group create --name al-exports-events \
  --subscription "$topic_sub" --resource-group "$topic_rg" \
  --template-file infra/eventgrid/exports-subscription.bicep \
  --parameters systemTopicName="$topic" functionAppName="$app" functionAppResourceGroup="$app_rg" \
               functionAppSubscriptionId="$app_sub" exportsContainer="$container" exportsPrefix="$prefix" \
  --output none
echo "postdeploy: Event Grid subscription al-labels-export is in place"
