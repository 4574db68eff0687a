// When the labeling exports are dropped into another storage account (e.g. the Azure ML workspace's default
// blob store, where historical Data Labeling exports are), the label stage works in that account: the blob trigger watches it, the reports are
// written next to the exports, unreadable exports are quarantined and replayed there. Its identity needs
// Blob Data Owner (blob trigger receipts; reports; quarantine) and Queue Data Contributor (the trigger's
// poison queue) there, and the quarantine container must exist. Deployed into that account's resource
// group.

param storageAccountName string
param appPrincipalId string
@description('Container unreadable exports are moved to, in this account (AL_QUARANTINE_CONTAINER).')
param quarantineContainer string

var roles = [
  'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // Storage Blob Data Owner
  '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor
]

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource quarantine 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: quarantineContainer
  properties: { publicAccess: 'None' }
}

resource assignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in roles: {
  scope: account
  name: guid(account.id, appPrincipalId, role)
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
  }
}]

output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
