#!/bin/sh
# azd postdeploy hook (azure.yaml), two steps after the code is deployed; safe to re-run (`azd hooks run postdeploy`).
#
# 1. Label Studio's project, once: unless the azd environment already has LABEL_STUDIO_PROJECT_ID, run
#    `al labeling setup` (the project with the model's classes, uncertainty sampling, the labeling account as
#    source storage in proxy mode, the webhook to the label app with its function key in an x-functions-key
#    header), keep the project id it prints (last stdout line, JSON {"project_id": N, ...}) in the azd
#    environment (the next `azd provision` writes it again) and set AL_LABEL_STUDIO_PROJECT_ID on the selector
#    and label apps, which refuse to start without it. Secrets (the service user's token, the labeling
#    account's key, the function key) are read here and handed to the command in its environment, never printed.
# 2. Subscribe the label app's Event Grid blob trigger to the exports account. Flex Consumption runs the Blob
#    trigger only with the Event Grid source. main.bicep creates the system topic on the exports account; the
#    webhook subscription (infra/eventgrid/exports-subscription.bicep) can only be created after the code is
#    deployed: the host creates the blobs_extension system key once it has loaded the trigger, and Event Grid
#    validates the endpoint on creation. Microsoft's azd Event Grid blob quickstart does the same step in its
#    post-deploy hook.
set -eu

value() { # azd passes the environment's values to hooks; ask azd when run by hand
  eval "v=\${$1:-}"
  [ -n "$v" ] || v=$(azd env get-value "$1" 2>/dev/null || true)
  printf '%s' "$v"
}

require() { # names of shell variables that must not be empty
  for required in "$@"; do
    eval "[ -n \"\$$required\" ]" || { echo "postdeploy: $required is empty; run 'azd provision' first" >&2; exit 1; }
  done
}

app=$(value SERVICE_LABELS_NAME)
app_rg=$(value AZURE_RESOURCE_GROUP)
app_sub=$(value AZURE_SUBSCRIPTION_ID)
topic=$(value EXPORTS_SYSTEM_TOPIC_NAME)
topic_rg=$(value EXPORTS_SYSTEM_TOPIC_RESOURCE_GROUP)
topic_sub=$(value EXPORTS_SYSTEM_TOPIC_SUBSCRIPTION_ID)
container=$(value AL_EXPORTS_CONTAINER)
prefix=$(value AL_EXPORTS_PREFIX)
require app app_rg app_sub topic topic_rg topic_sub container
# Never the whole container (issue 20, item 4): the label stage quarantines (copies, then deletes) what it cannot
# read under the watched folder, so the Event Grid filter must name a folder. main.bicep requires one too.
case "$prefix" in
  "") echo "postdeploy: AL_EXPORTS_PREFIX is empty: the Event Grid filter would cover the whole container $container; set EXPORTS_PREFIX (default labeling/exports/) and run 'azd provision'" >&2
      exit 1 ;;
  */) ;;
  *) echo "postdeploy: AL_EXPORTS_PREFIX ($prefix) is not a folder: it must end with /" >&2
     exit 1 ;;
esac

# --- 1. the Label Studio project (once) ------------------------------------------------------------------------
project=$(value LABEL_STUDIO_PROJECT_ID)
if [ -n "$project" ]; then
  echo "postdeploy: Label Studio project $project (LABEL_STUDIO_PROJECT_ID) is set up"
else
  ls_url=$(value LABEL_STUDIO_URL)
  model=$(value AL_MODEL_NAME)
  selector=$(value SERVICE_SELECTOR_NAME)
  vault=$(value KEY_VAULT_NAME)
  token_secret=$(value LABEL_STUDIO_TOKEN_SECRET_NAME)
  key_secret=$(value LABELING_STORAGE_KEY_SECRET_NAME)
  account=$(value LABELING_STORAGE_ACCOUNT_NAME)
  labeling=$(value AL_LABELING_CONTAINER)
  require ls_url model selector vault token_secret key_secret account labeling
  command -v al >/dev/null 2>&1 || {
    echo "postdeploy: the 'al' command is not on PATH: install this package (make install) and activate its venv" >&2
    exit 1
  }

  # A first start on a new database runs every migration: wait until Label Studio answers.
  echo "postdeploy: waiting for Label Studio at $ls_url"
  tries=0
  until curl -fsS -o /dev/null "$ls_url/health" 2>/dev/null; do
    tries=$((tries + 1))
    if [ "$tries" -gt 60 ]; then
      echo "postdeploy: Label Studio did not answer $ls_url/health in 10 minutes (see its container app's logs)" >&2
      exit 1
    fi
    sleep 10
  done

  host=$(az functionapp show --subscription "$app_sub" -g "$app_rg" -n "$app" --query defaultHostName -o tsv)
  # The label app's default function key: Label Studio sends it in the webhook's x-functions-key header.
  tries=0
  until webhook_key=$(az functionapp keys list --subscription "$app_sub" -g "$app_rg" -n "$app" \
                        --query functionKeys.default -o tsv 2>/dev/null) && [ -n "$webhook_key" ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 30 ]; then
      echo "postdeploy: no default function key on $app after 5 minutes: is the labels app deployed?" >&2
      exit 1
    fi
    curl -s -o /dev/null "https://$host/" || true # wakes the host, which creates its keys
    sleep 10
  done
  storage_key=$(az keyvault secret show --vault-name "$vault" -n "$key_secret" --query value -o tsv)
  token=$(az keyvault secret show --vault-name "$vault" -n "$token_secret" --query value -o tsv)

  # The secrets go to the command in its environment only (never on its command line, where `ps` shows them);
  # the classes come from the model's serving version in ADX (AL_BACKEND=azure, AL_ADX_* of this environment).
  echo "postdeploy: al labeling setup (model $model, webhook https://$host/api/labels/webhook, storage $account/$labeling)"
  if ! out=$(AL_BACKEND=azure AL_MODEL_NAME="$model" AL_LABEL_STUDIO_TOKEN="$token" \
               AL_LABELING_ACCOUNT_KEY="$storage_key" AL_LABEL_STUDIO_WEBHOOK_KEY="$webhook_key" \
               al labeling setup --url "$ls_url" --storage azure --storage-account "$account" \
               --container "$labeling" --webhook-url "https://$host/api/labels/webhook"); then
    echo "postdeploy: al labeling setup failed. It builds the label config from the model's classes: if no version" >&2
    echo "of $model serves yet, run 'al bootstrap' (docs/deploy.md step 6), then 'azd hooks run postdeploy'." >&2
    exit 1
  fi
  unset token storage_key webhook_key
  project=$(printf '%s\n' "$out" | tail -n 1 | sed -n 's/.*"project_id"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p')
  if [ -z "$project" ]; then
    echo "postdeploy: al labeling setup printed no {\"project_id\": N} on its last line" >&2
    exit 1
  fi
  azd env set LABEL_STUDIO_PROJECT_ID "$project"
  for a in "$selector" "$app"; do
    az functionapp config appsettings set --subscription "$app_sub" -g "$app_rg" -n "$a" \
      --settings "AL_LABEL_STUDIO_PROJECT_ID=$project" --output none
  done
  echo "postdeploy: Label Studio project $project; AL_LABEL_STUDIO_PROJECT_ID set on $selector and $app"
fi

# --- 2. the Event Grid subscription of the label app's blob trigger --------------------------------------------
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
