// The Event Grid subscription that drives the label app's blob trigger (Event Grid source, the only Blob
// trigger source Flex Consumption runs): BlobCreated events under the exports container/prefix go to the
// app's blobs extension webhook,
//   https://<app host>/runtime/webhooks/blobs?functionName=Host.Functions.<function>&code=<blobs_extension key>
// as in Microsoft's azd Event Grid blob trigger quickstart for Flex Consumption.
//
// Deployed by the azd postdeploy hook (infra/hooks/postdeploy.sh) into the system topic's resource group,
// not by main.bicep, for two reasons that both come after `azd deploy`: the host creates the
// blobs_extension system key only once it has loaded an Event Grid-source blob trigger, and Event Grid
// validates the webhook when the subscription is created. The key is read here with listKeys on the
// app's host (an `existing` reference), so it never passes through a shell or an azd output.
targetScope = 'resourceGroup'

@description('The system topic on the exports account (main.bicep output EXPORTS_SYSTEM_TOPIC_NAME).')
param systemTopicName string

@description('The label app (SERVICE_LABELS_NAME), its resource group and subscription.')
param functionAppName string
param functionAppResourceGroup string
param functionAppSubscriptionId string = subscription().subscriptionId

@description('The blob trigger function: @bp.function_name of the blob trigger in functions/label_export_trigger/blueprint.py.')
param functionName string = 'labels_export'

@description('What the trigger watches (AL_EXPORTS_CONTAINER, AL_EXPORTS_PREFIX).')
param exportsContainer string
// Never the whole container (issue 20, item 4): the label stage quarantines, and so deletes, what it cannot read
// under the watched folder, so the filter names a folder of the loop's own exports, e.g. 'labeling/exports/'.
@minLength(1)
@description('The folder under the container, ending with \'/\' (main.bicep output AL_EXPORTS_PREFIX); required, never empty.')
param exportsPrefix string

param subscriptionName string = 'al-labels-export'

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: systemTopicName
}

resource app 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
  scope: resourceGroup(functionAppSubscriptionId, functionAppResourceGroup)
}

var hostId = resourceId(functionAppSubscriptionId, functionAppResourceGroup, 'Microsoft.Web/sites/host', functionAppName, 'default')
var blobsExtensionKey = listKeys(hostId, '2024-04-01').systemKeys.blobs_extension

resource blobCreated 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: subscriptionName
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: 'https://${app.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=${blobsExtensionKey}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      // Only the watched folder: reports and the other containers raise no invocation.
      subjectBeginsWith: '/blobServices/default/containers/${exportsContainer}/blobs/${exportsPrefix}'
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
}

output name string = blobCreated.name
