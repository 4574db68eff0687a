// The loop's data account: every container and queue the code names, no shared-key access.
// (The one account with shared keys is the separate labeling account, labeling-storage.bicep: only the items
// under labeling, for Label Studio. Each function app's host storage is an account of its own,
// functionapp.bicep.) The apps' roles here are container- and queue-scoped (storage-roles.bicep).
//
// Network: public endpoint, default action Allow. The four Flex Consumption apps run without virtual network
// integration and so reach the account from no fixed address, App Service is not a service the storage firewall
// trusts, and the training compute cluster (not in a virtual network either) mounts the items from its nodes:
// default action Deny would cut the loop off (infra/checkov-baseline.yaml). What protects the data is Entra ID
// only (no shared key, no SAS, no public blob access) with container-scoped roles. `bypass: AzureServices`
// keeps trusted services (Event Grid, Azure Monitor, the workspace) working should the default ever turn Deny.

@description('Storage account name (3-24 lowercase letters and digits).')
param name string
param location string
param tags object = {}

@description('Blob containers the code uses (items, landing, exports, models, ...).')
param containers array

@description('Queues the code uses (the retrain requests) and the poison queues the Functions host moves failures to.')
param queues array

@description('Log Analytics workspace the diagnostic settings send to.')
param logAnalyticsWorkspaceId string

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false // identity only: no key can leak into an app setting
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: { defaultAction: 'Allow', bypass: 'AzureServices' }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: { enabled: true, days: 7 }
  }
}

resource containerResources 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for c in containers: {
  parent: blobService
  name: c
  properties: { publicAccess: 'None' }
}]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource queueResources 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for q in queues: {
  parent: queueService
  name: q
}]

// Audit logs (StorageRead, StorageWrite, StorageDelete) of the blob and queue services, and the account's metrics.
resource accountMetrics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: account
  name: 'to-log-analytics'
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    metrics: [
      { category: 'Transaction', enabled: true }
    ]
  }
}

resource blobLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: blobService
  name: 'to-log-analytics'
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      { categoryGroup: 'allLogs', enabled: true }
    ]
  }
}

resource queueLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: queueService
  name: 'to-log-analytics'
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      { categoryGroup: 'allLogs', enabled: true }
    ]
  }
}

output name string = account.name
output id string = account.id
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
