// When the labeling exports are dropped into another storage account (e.g. the Azure ML workspace's default
// blob store, where historical Data Labeling exports are), the label stage works in that account: the blob
// trigger watches the exports container, the reports are written next to the exports, unreadable exports are
// quarantined and replayed there. Deployed into that account's resource group; the label app's identity gets
// roles there at container and queue scope only, nothing on the rest of the account (it is not the loop's):
// - Storage Blob Data Owner on the exports container: the blob trigger's role (Microsoft's blob trigger
//   permissions) and the intake's reports, moves and deletes;
// - Storage Blob Data Contributor on `exports-quarantine` (created here): quarantine, reports, replay;
// - Storage Queue Data Contributor on the blob trigger's poison queue `webjobs-blobtrigger-poison` (created
//   here), which the blob extension keeps in the account of the trigger's connection.

param storageAccountName string
@description('Principal id of the label app\'s identity.')
param labelsPrincipalId string
@description('The container the blob trigger watches (AL_EXPORTS_CONTAINER); it exists in this account.')
param exportsContainer string
@description('Container unreadable exports are moved to, in this account (AL_QUARANTINE_CONTAINER).')
param quarantineContainer string
@description('The blob extension\'s poison queue in the account of the trigger\'s connection.')
param poisonQueue string = 'webjobs-blobtrigger-poison'

var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource exports 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: exportsContainer
}

resource quarantine 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: quarantineContainer
  properties: { publicAccess: 'None' }
}

resource poison 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: poisonQueue
}

resource exportsOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: exports
  name: guid(exports.id, labelsPrincipalId, storageBlobDataOwner)
  properties: {
    principalId: labelsPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
  }
}

resource quarantineContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: quarantine
  name: guid(quarantine.id, labelsPrincipalId, storageBlobDataContributor)
  properties: {
    principalId: labelsPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
  }
}

resource poisonContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: poison
  name: guid(poison.id, labelsPrincipalId, storageQueueDataContributor)
  properties: {
    principalId: labelsPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
  }
}

output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
