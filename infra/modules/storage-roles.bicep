// Data-plane roles on the loop's storage account for the apps' user-assigned identity, and read access
// for the Azure ML workspace (Studio previews items and data assets through the identity-based items
// datastore) and for the training compute cluster's identity (the job mounts the items
// datastore and reads the manifest data asset in the manifests container).

param storageAccountName string

@description('Principal (object) id of the function apps\' user-assigned identity.')
param appPrincipalId string

@description('Principal id of the Azure ML workspace\'s system-assigned identity; empty: no grant.')
param workspacePrincipalId string = ''

@description('Principal id of the training compute cluster\'s user-assigned identity; empty: no grant.')
param computePrincipalId string = ''

// Built-in role definition ids (stable across tenants).
var roles = {
  // The host's AzureWebJobsStorage, the Flex Consumption deployment container and the blob trigger
  // need Owner; the code's BlobServiceClient (items, landing, models, manifests, ...) is covered. The items
  // under labeling live on the labeling account (labeling-storage.bicep), not here.
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  // Retrain queue: the label stage sends (and creates it if missing), the dispatch trigger reads and
  // deletes; Durable Functions' task hub queues; the blob trigger's poison queue.
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  // Durable Functions' task hub history and instance tables.
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  storageBlobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
}

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

var appRoles = [roles.storageBlobDataOwner, roles.storageQueueDataContributor, roles.storageTableDataContributor]

resource appAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in appRoles: {
  scope: account
  name: guid(account.id, appPrincipalId, role)
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
  }
}]

resource workspaceReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(workspacePrincipalId)) {
  scope: account
  name: guid(account.id, workspacePrincipalId, roles.storageBlobDataReader)
  properties: {
    principalId: workspacePrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
  }
}

// The training job reads with the compute's identity (identity-based datastore, no stored credential):
// the items (mounted from the items datastore) and the manifest (a uri_file in the manifests container).
resource computeReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(computePrincipalId)) {
  scope: account
  name: guid(account.id, computePrincipalId, roles.storageBlobDataReader)
  properties: {
    principalId: computePrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
  }
}
