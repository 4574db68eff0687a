// The Event Grid system topic on the storage account the labeling exports land in. On Flex Consumption
// the Blob trigger runs only with the Event Grid source: BlobCreated events reach the label app through
// a webhook subscription to its blobs extension (infra/eventgrid/exports-subscription.bicep, deployed by
// the postdeploy hook once the code, and so the extension's system key, exists).
// Deployed into the exports account's resource group. An account has at most one system topic: pass the
// existing one's name to reuse it.

param storageAccountName string
param systemTopicName string
@description('A system topic that already exists on the account; empty: create systemTopicName.')
param existingSystemTopicName string = ''
param tags object = {}
@description('Log Analytics workspace the created topic\'s diagnostic settings send to.')
param logAnalyticsWorkspaceId string

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = if (empty(existingSystemTopicName)) {
  name: systemTopicName
  location: account.location
  tags: tags
  properties: {
    source: account.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

// Delivery failures to the label app's webhook (DeliveryFailures) and the topic's metrics (published, matched,
// delivered, dead-lettered events). Only on the topic created here: an existing one is someone else's.
resource topicLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (empty(existingSystemTopicName)) {
  scope: topic
  name: 'to-log-analytics'
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      { categoryGroup: 'allLogs', enabled: true }
    ]
    metrics: [
      { category: 'AllMetrics', enabled: true }
    ]
  }
}

output name string = empty(existingSystemTopicName) ? systemTopicName : existingSystemTopicName
